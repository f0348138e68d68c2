"""Reference token ids from llama.cpp (via the llama-cpp-python package) for
the runner's tests: tokenizer ids of varied text, and 32 greedy tokens for a
few prompts, with the gap between llama.cpp's two best logits at each step
(the test's rule for float-level divergence uses it).

Usage: python llama_reference.py MODEL.gguf OUT.json
Set up with bench/setup-llama-reference.sh (builds llama.cpp from source).
"""
import json
import sys

import numpy as np
from llama_cpp import Llama

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

TEXTS = [
    "Hello, world!",
    "def add(a, b):\n    return a + b  # sum\n",
    "Emoji: 🦀🚀 and ZWJ 👩‍💻, flags 🇫🇷",
    "中文分词测试，日本語のテキスト、한국어 문장",
    "   leading spaces\t\ttabs\n\n\nnewlines    trailing   ",
    "Numbers 1234567 and 3.14159, dates 2026-11-29",
    "Ünïcödé àccents, Ελληνικά, русский текст",
    "<|im_start|>user\nspecial tokens inline<|im_end|>",
    "",
    "a",
]

CHATS = [
    [("user", "What is the capital of France?")],
    [("user", "Write a haiku about the sea.")],
    [("system", "You answer in one short sentence."), ("user", "Why is the sky blue?")],
    [("user", "List three prime numbers.")],
    [("user", "Translate 'good morning' into Spanish.")],
]


def chatml(messages):
    out = ""
    if messages[0][0] != "system":
        out += f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
    for role, content in messages:
        out += f"<|im_start|>{role}\n{content}<|im_end|>\n"
    return out + "<|im_start|>assistant\n"


def main(model, out):
    llm = Llama(model_path=model, n_ctx=2048, n_threads=2, n_batch=512,
                logits_all=True, verbose=False)
    tokenizer = [
        {"text": t, "ids": llm.tokenize(t.encode(), add_bos=False, special=True)}
        for t in TEXTS
    ]
    decodes = []
    for messages in CHATS:
        prompt = chatml(messages)
        ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        llm.reset()
        llm.eval(ids)
        gen, gaps = [], []
        for _ in range(32):
            logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
            top2 = np.argsort(logits)[-2:]
            tok = int(top2[-1])
            gaps.append(float(logits[top2[-1]] - logits[top2[-2]]))
            gen.append(tok)
            if tok == llm.token_eos() or tok == 2:
                break
            llm.eval([tok])
        decodes.append({"messages": messages, "prompt_ids": ids,
                        "greedy_ids": gen, "top2_gaps": gaps})
    with open(out, "w") as f:
        json.dump({"model": model.rsplit("/", 1)[-1], "tokenizer": tokenizer,
                   "greedy": decodes}, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

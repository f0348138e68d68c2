"""Helpers the SDK suites share: a body validated against OpenAI's schemas
as the SDK parsed it, and a call that must raise a given SDK exception."""
from openai_schemas import validate


def check(schema, obj):
    """Validates `obj` (an SDK model or a plain body) against `schema`; returns it."""
    validate(schema, obj.model_dump(mode="json", exclude_unset=True, by_alias=True, warnings=False) if hasattr(obj, "model_dump") else obj)
    return obj


def raises(exc, fn, *args, says=None, **kw):
    """Calls `fn`, which must raise `exc` (whose text holds `says`, if given)."""
    try:
        fn(*args, **kw)
    except exc as e:
        if says is not None:
            assert says in str(e), (says, str(e))
        return e
    raise AssertionError(f"{fn} did not raise {exc.__name__}")

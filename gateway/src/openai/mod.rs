//! The OpenAI-compatible surface.

pub mod chat;
pub mod completions;
pub mod models;
pub mod output;
pub mod params;

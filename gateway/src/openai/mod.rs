//! The OpenAI-compatible surface.

pub mod chat;
pub mod completions;
pub mod files;
pub mod front;
pub mod models;
pub mod multipart;
pub mod output;
pub mod paging;
pub mod params;
pub mod request;
pub mod responses;
pub mod tools;
pub mod vector_stores;
pub mod wire;

pub mod dns;
pub mod http;

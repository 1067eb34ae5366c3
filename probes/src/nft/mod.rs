//! kube-proxy's nftables mode: the ruleset parser (`nft list ruleset` text, `nft -f` scripts,
//! `nft -j` JSON), the typed model, the packet tracer that walks the hooks the way the
//! kernel does, and the renderer of what kube-proxy programs.

pub mod model;
pub mod parse;
pub mod render;
pub mod trace;

pub use model::{
    Action, Atom, Chain, Element, Family, Field, Format, Hook, Rule, Ruleset, Set, Stmt, Table,
};
pub use parse::{parse_json, parse_ruleset, parse_text, ParseError, ParseErrorKind};
pub use trace::trace;

//! Histories and checkers (see docs).
pub mod checker;
pub mod history;

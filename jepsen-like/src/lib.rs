//! Histories and checkers (see docs).

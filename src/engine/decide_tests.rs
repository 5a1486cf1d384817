//! Unit tests of `decide`, one per rule.

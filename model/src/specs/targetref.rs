//! targetRef (placeholder).

//! Supervision of external processes (under construction).

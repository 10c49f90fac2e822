//! MP-SPDZ engine (under construction).

//! Container orchestration of the deployment (under construction).

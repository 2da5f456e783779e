//! Target groups: registered targets and the choice of one.

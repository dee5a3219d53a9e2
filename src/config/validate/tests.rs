//! Every rule, with its message and location asserted.

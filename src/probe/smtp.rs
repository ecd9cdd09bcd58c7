//! smtp (filled in by the mailbox-login work).

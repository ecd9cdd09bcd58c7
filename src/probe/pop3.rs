//! pop3 (filled in by the mailbox-login work).

//! imap (filled in by the mailbox-login work).

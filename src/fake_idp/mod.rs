//! A fake of Microsoft's identity platform (filled in by the token work).

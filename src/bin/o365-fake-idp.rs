//! The fake Microsoft identity platform as its own process (tests, demo).
fn main() {
    eprintln!("o365-fake-idp: not built yet");
    std::process::exit(2);
}

//! Every file in `config/` parses and validates.

use std::path::Path;

#[test]
fn every_shipped_config_file_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("config/ exists") {
        let path = entry.expect("readable dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        n += 1;
        if let Err(e) = o365_mail_exporter::config::load_file(&path) {
            panic!("{} does not validate:\n{e}", path.display());
        }
    }
    assert!(n >= 1, "no config files found in {}", dir.display());
}

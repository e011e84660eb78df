//! The committed C header must be exactly what cbindgen generates from the code.
use std::path::PathBuf;

#[test]
fn committed_header_matches_the_code() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen")
        .write(&mut generated);
    let path = crate_dir.join("include/xshm_text.h");
    if std::env::var_os("XSHM_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/xshm_text.h is out of date: run XSHM_BLESS=1 cargo test -p xshm-text --test header_drift"
    );
}

//! The shared vectors (tests/vectors/utf8.tsv) that the C++ header and pytest check too.
use std::path::PathBuf;

fn unhex(h: &str) -> Vec<u8> {
    if h == "-" {
        return Vec::new();
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn shared_vectors() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors/utf8.tsv");
    let text = std::fs::read_to_string(path).expect("tests/vectors/utf8.tsv");
    let (mut cuts, mut validations) = (0, 0);
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let cols: Vec<&str> = line.split('\t').collect();
        let input = unhex(cols[1]);
        match cols[0] {
            "cut" => {
                let n: usize = cols[2].parse().unwrap();
                let want: usize = cols[3].parse().unwrap();
                assert_eq!(xshm_text::cut(&input, n), want, "{line}");
                cuts += 1;
            }
            "validate" => {
                let want: i64 = cols[3].parse().unwrap();
                let got = match xshm_text::validate(&input) {
                    Ok(()) => -1,
                    Err(off) => off as i64,
                };
                assert_eq!(got, want, "{line}");
                validations += 1;
            }
            other => panic!("unknown vector kind {other}"),
        }
    }
    assert!(cuts > 20 && validations > 5);
}

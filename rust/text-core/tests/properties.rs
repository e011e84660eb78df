//! Properties of the cut: always valid UTF-8, a prefix, at most N bytes, and the longest such.
use proptest::prelude::*;

proptest! {
    #[test]
    fn cut_is_the_longest_valid_prefix(s in "\\PC{0,40}", n in 0usize..200) {
        let bytes = s.as_bytes();
        let k = xshm_text::cut(bytes, n);
        prop_assert!(k <= n || k == bytes.len() && bytes.len() <= n);
        prop_assert!(k <= bytes.len());
        prop_assert!(std::str::from_utf8(&bytes[..k]).is_ok());
        // Longest: every longer prefix within n bytes splits a code point.
        for j in (k + 1)..=n.min(bytes.len()) {
            prop_assert!(std::str::from_utf8(&bytes[..j]).is_err());
        }
    }

    #[test]
    fn validate_agrees_with_std(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let want = std::str::from_utf8(&bytes).map(|_| ()).map_err(|e| e.valid_up_to());
        prop_assert_eq!(xshm_text::validate(&bytes), want);
    }

    #[test]
    fn utf16_round_trips(s in "\\PC{0,40}") {
        let units = xshm_text::utf8_to_utf16(s.as_bytes()).unwrap();
        prop_assert_eq!(xshm_text::utf16_to_utf8(&units).unwrap(), s);
    }

    #[test]
    fn lossy_decode_is_valid_and_matches_std(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let got = xshm_text::decode_lossy(&bytes);
        prop_assert_eq!(got, String::from_utf8_lossy(&bytes).into_owned());
    }
}

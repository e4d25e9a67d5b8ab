//! Serialize byte strings (paths, arguments) without losing information.

/// Serializes as a string when the bytes are UTF-8, as an array of numbers
/// otherwise, so JSON stays readable for the common case and exact for the
/// rest.
pub(crate) struct Bytes<'a>(pub(crate) &'a [u8]);

impl serde::Serialize for Bytes<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(self.0) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => serializer.collect_seq(self.0),
        }
    }
}

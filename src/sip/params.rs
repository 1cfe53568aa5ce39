//! [`Params`]: `;name=value` lists of URIs and header values.

use std::fmt;

use super::bytestr::ByteStr;

/// An ordered list of parameters. Names compare case-insensitively; values
/// are kept as written (quoted strings keep their quotes, URI parameters
/// keep their `%` escapes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params(Vec<(ByteStr, Option<ByteStr>)>);

impl Params {
    /// An empty list.
    pub fn new() -> Self {
        Params(Vec::new())
    }

    /// `Some(value)` if `name` is present (`Some(None)` for a flag such as `lr`).
    pub fn get(&self, name: &str) -> Option<Option<&ByteStr>> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }

    /// The value of `name` as text, if present with a value.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.get(name).flatten().map(|v| v.as_str())
    }

    /// True if `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets `name` (replacing an existing value in place, else appending).
    pub fn set(&mut self, name: impl Into<ByteStr>, value: Option<ByteStr>) {
        let name = name.into();
        match self
            .0
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(&name))
        {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// Removes `name`; returns whether it was present.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        before != self.0.len()
    }

    /// The parameters in order.
    pub fn iter(&self) -> impl Iterator<Item = (&ByteStr, Option<&ByteStr>)> {
        self.0.iter().map(|(n, v)| (n, v.as_ref()))
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn push(&mut self, name: ByteStr, value: Option<ByteStr>) {
        self.0.push((name, value));
    }

    /// Writes the list with `sep` before each parameter (`;` or `&`), the
    /// first separator replaced by `first`.
    pub(crate) fn write_sep(
        &self,
        f: &mut fmt::Formatter<'_>,
        first: char,
        sep: char,
    ) -> fmt::Result {
        for (i, (n, v)) in self.0.iter().enumerate() {
            f.write_fmt(format_args!("{}{}", if i == 0 { first } else { sep }, n))?;
            if let Some(v) = v {
                f.write_fmt(format_args!("={v}"))?;
            }
        }
        Ok(())
    }
}

/// Writes `;name=value` for each parameter.
impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_sep(f, ';', ';')
    }
}

/// Builds [`Params`] from raw `(name, value)` slices of `src`.
pub(crate) fn from_raw(
    src: &bytes::Bytes,
    raw: Vec<super::grammar::RawParam<'_>>,
) -> Result<Params, std::str::Utf8Error> {
    let mut p = Params(Vec::with_capacity(raw.len()));
    for (n, v) in raw {
        let name = ByteStr::from_utf8(super::grammar::sub(src, n))?;
        let value = match v {
            Some(v) => Some(ByteStr::from_utf8(super::grammar::sub(src, v))?),
            None => None,
        };
        p.0.push((name, value));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_set_remove_case_insensitive() {
        let mut p = Params::new();
        p.set("Branch", Some("z9hG4bK1".into()));
        p.set("lr", None);
        assert_eq!(p.value("branch"), Some("z9hG4bK1"));
        assert_eq!(p.get("LR"), Some(None));
        assert!(p.get("tag").is_none());
        p.set("BRANCH", Some("x".into()));
        assert_eq!(p.len(), 2);
        assert_eq!(p.to_string(), ";Branch=x;lr");
        assert!(p.remove("lr"));
        assert!(!p.contains("lr"));
    }
}

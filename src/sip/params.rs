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

    /// Appends a parameter (the parsers' path). The first one allocates
    /// room for four, as [`parse_semi`] does, instead of going through the
    /// vector's growth path (which costs more than the allocation).
    #[inline]
    pub(crate) fn push(&mut self, name: ByteStr, value: Option<ByteStr>) {
        if self.0.capacity() == 0 {
            self.0 = Vec::with_capacity(4);
        }
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

/// A parameter name: static when it is one that nearly every message
/// carries (taking these from static memory spares the reference count of
/// the received buffer), else a zero-copy slice of `src`.
#[inline]
pub(crate) fn param_name(src: &bytes::Bytes, n: &[u8]) -> ByteStr {
    let known = match n {
        b"branch" => "branch",
        b"tag" => "tag",
        b"rport" => "rport",
        b"received" => "received",
        b"lr" => "lr",
        b"user" => "user",
        b"transport" => "transport",
        b"maddr" => "maddr",
        b"ttl" => "ttl",
        b"q" => "q",
        b"expires" => "expires",
        b"ftag" => "ftag",
        _ => return ByteStr::from_ascii(super::grammar::sub(src, n)),
    };
    ByteStr::from_static(known)
}

/// Parses `*( SEMI generic-param )` at the start of `i` (a slice of `src`)
/// straight into [`Params`]; returns them and the rest. A `;` not followed
/// by a parameter is an error (RFC 4475 §3.1.2.1).
pub(crate) fn parse_semi<'a>(
    src: &bytes::Bytes,
    i: &'a [u8],
) -> Result<(Params, &'a [u8]), &'static str> {
    use super::grammar::sub;
    let mut p = Params::new();
    let rest = scan_semi(i, |name, value| {
        let value = match value {
            // Quoted strings are UTF-8 (checked by the scan), the rest ASCII.
            Some(v) if v.first() == Some(&b'"') => {
                Some(ByteStr::from_utf8(sub(src, v)).map_err(|_| "parameter value is not UTF-8")?)
            }
            Some(v) => Some(ByteStr::from_ascii(sub(src, v))),
            None => None,
        };
        if p.0.capacity() == 0 {
            // Allocated straight at a size that holds what a Via or a URI
            // usually carries, instead of through the growth path.
            p.0 = Vec::with_capacity(4);
        }
        p.0.push((param_name(src, name), value));
        Ok(())
    })?;
    Ok((p, rest))
}

/// Checks `*( SEMI generic-param )` at the start of `i` as [`parse_semi`]
/// reads it (the same errors) without building the list; the rest.
#[inline]
pub(crate) fn skip_semi(i: &[u8]) -> Result<&[u8], &'static str> {
    scan_semi(i, |_, _| Ok(()))
}

/// The value of parameter `name` (case-insensitive) in the
/// `*( SEMI generic-param )` at the start of `i`, read as [`parse_semi`]
/// reads the list (the same errors) without building it: `Some(None)` for a
/// flag, `None` when absent; and the rest.
pub(crate) fn find_semi<'a>(
    src: &bytes::Bytes,
    i: &'a [u8],
    name: &str,
) -> Result<(Option<Option<ByteStr>>, &'a [u8]), &'static str> {
    let mut found: Option<Option<&[u8]>> = None;
    let rest = scan_semi(i, |n, v| {
        if found.is_none() && n.eq_ignore_ascii_case(name.as_bytes()) {
            found = Some(v);
        }
        Ok(())
    })?;
    let value = found.map(|v| {
        v.map(|v| {
            // A quoted value passed the scan's UTF-8 check.
            ByteStr::from_utf8(super::grammar::sub(src, v)).unwrap_or_default()
        })
    });
    Ok((value, rest))
}

/// The hand-written `*( SEMI generic-param )` (the nom combinators cost
/// more than the parameters): SEMI = SWS ";" SWS, generic-param = token
/// [ EQUAL gen-value ], EQUAL = SWS "=" SWS. Calls `f` with each name and
/// raw value (a quoted value is checked to be UTF-8 first); returns the
/// rest.
fn scan_semi<'a>(
    mut i: &'a [u8],
    mut f: impl FnMut(&'a [u8], Option<&'a [u8]>) -> Result<(), &'static str>,
) -> Result<&'a [u8], &'static str> {
    use super::grammar::{gen_value, is_token, is_wsp};
    fn skip_wsp(i: &[u8]) -> &[u8] {
        let k = i.iter().position(|&c| !is_wsp(c)).unwrap_or(i.len());
        &i[k..]
    }
    loop {
        let Some(r) = skip_wsp(i).strip_prefix(b";") else {
            return Ok(i);
        };
        let r = skip_wsp(r);
        let n = r.iter().position(|&c| !is_token(c)).unwrap_or(r.len());
        if n == 0 {
            return Err("empty or malformed parameter");
        }
        let (name, after_name) = r.split_at(n);
        // [ EQUAL gen-value ]; without a valid value the parameter is a
        // flag and the rest starts right after its name.
        let (v, rest) = match skip_wsp(after_name).strip_prefix(b"=") {
            Some(t) => match gen_value(skip_wsp(t)) {
                Ok((rest, v)) => (Some(v), rest),
                Err(_) => (None, after_name),
            },
            None => (None, after_name),
        };
        // Only quoted strings may hold non-ASCII (UTF-8) text.
        if let Some(v) = v.filter(|v| v.first() == Some(&b'"')) {
            std::str::from_utf8(v).map_err(|_| "parameter value is not UTF-8")?;
        }
        f(name, v)?;
        i = rest;
    }
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

    /// The `nom` formulation `parse_semi` replaced: the reference.
    fn parse_semi_nom<'a>(
        src: &bytes::Bytes,
        mut i: &'a [u8],
    ) -> Result<(Params, &'a [u8]), &'static str> {
        use crate::sip::grammar::{generic_param, sep, sub, sws};
        use nom::sequence::preceded;
        let mut p = Params::new();
        loop {
            match preceded(sep(';'), generic_param)(i) {
                Ok((rest, (n, v))) => {
                    let value = match v {
                        Some(v) if v.first() == Some(&b'"') => Some(
                            ByteStr::from_utf8(sub(src, v))
                                .map_err(|_| "parameter value is not UTF-8")?,
                        ),
                        Some(v) => Some(ByteStr::from_ascii(sub(src, v))),
                        None => None,
                    };
                    p.0.push((param_name(src, n), value));
                    i = rest;
                }
                Err(_) => {
                    let after = sws(i).map(|(a, _)| a).unwrap_or(i);
                    if after.first() == Some(&b';') {
                        return Err("empty or malformed parameter");
                    }
                    return Ok((p, i));
                }
            }
        }
    }

    #[test]
    fn parse_semi_agrees_with_the_nom_grammar_on_edge_cases() {
        for s in [
            "",
            ";",
            "; ",
            ";a",
            ";a=",
            ";a=;",
            ";a = ;b",
            " ; a = b ; c",
            ";a=\"x",
            ";a=\"x\";b",
            ";a;;b",
            ";a=b,c",
            ";a =b;c= d",
            ";a=[::1];b=1.2.3.4:5",
            ";a\t=\tb",
            ";=b",
            "x;a",
        ] {
            let src = bytes::Bytes::from(s);
            let ours = parse_semi(&src, &src).map(|(p, rest)| (p, rest.len()));
            let reference = parse_semi_nom(&src, &src).map(|(p, rest)| (p, rest.len()));
            assert_eq!(ours, reference, "{s:?}");
        }
    }

    proptest::proptest! {
        // Cheap cases; the interesting shapes (`;name=` without a value)
        // are rare among random joins, so many of them.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        #[test]
        fn parse_semi_agrees_with_the_nom_grammar(parts in proptest::collection::vec(proptest::sample::select(vec![
            ";", ";", "=", "=", " ", "\t", ",", "a", "b1", "branch", "tag", "\"", "\"q r\"", "[::1]", "1.2.3.4", ":", "\u{e4}",
        ]), 0..12)) {
            let s = parts.concat();
            let src = bytes::Bytes::from(s);
            let ours = parse_semi(&src, &src).map(|(p, rest)| (p, rest.len()));
            let reference = parse_semi_nom(&src, &src).map(|(p, rest)| (p, rest.len()));
            proptest::prop_assert_eq!(&ours, &reference);
            for name in ["tag", "TAG", "a", "branch", "x"] {
                let found = find_semi(&src, &src, name).map(|(v, rest)| (v, rest.len()));
                let listed = ours
                    .as_ref()
                    .map(|(p, rest)| (p.get(name).map(|v| v.cloned()), *rest))
                    .map_err(|e| *e);
                proptest::prop_assert_eq!(found, listed, "{:?}", name);
            }
        }
    }

    #[test]
    fn parse_semi_stops_at_comma_and_rejects_empty_param() {
        let src = bytes::Bytes::from_static(b" ; branch = z9hG4bK1 ;rport;x=\"\xd1\x80\", y");
        let (p, rest) = parse_semi(&src, &src).unwrap();
        assert_eq!(rest, b", y");
        assert_eq!(p.value("branch"), Some("z9hG4bK1"));
        assert_eq!(p.get("rport"), Some(None));
        assert_eq!(p.value("x"), Some("\"\u{440}\""));
        let src = bytes::Bytes::from_static(b";;");
        assert!(parse_semi(&src, &src).is_err());
    }
}

//! containerd's filter language, as `ctr snapshots ls` and the garbage
//! collector send it: `kind==active,labels."containerd.io/gc.root"` is two
//! selectors that must both hold; several filters match if any does.
//! A selector is a field path (`.`-separated, components bare or
//! double-quoted), optionally an operator (`==`, `!=`, `~=` for a regular
//! expression) and a value (bare up to the next `,`, or double-quoted).

use regex::Regex;

use crate::error::{Error, Result};

/// Field lookup on whatever is filtered: (value, present).
pub trait Fields {
    fn field(&self, path: &[String]) -> Option<String>;
}

enum Op {
    Present,
    Equal(String),
    NotEqual(String),
    Matches(Regex),
}

struct Selector {
    path: Vec<String>,
    op: Op,
}

/// One filter: all its selectors must hold.
pub struct Filter(Vec<Selector>);

/// Several filters: any may hold; none at all matches everything.
pub struct AnyFilter(Vec<Filter>);

impl AnyFilter {
    pub fn parse(filters: &[String]) -> Result<AnyFilter> {
        let parsed = filters
            .iter()
            .filter(|f| !f.trim().is_empty())
            .map(|f| Filter::parse(f))
            .collect::<Result<Vec<_>>>()?;
        Ok(AnyFilter(parsed))
    }

    pub fn matches(&self, item: &impl Fields) -> bool {
        self.0.is_empty() || self.0.iter().any(|f| f.matches(item))
    }
}

impl Filter {
    pub fn parse(text: &str) -> Result<Filter> {
        let mut p = Parser {
            text,
            chars: text.char_indices().peekable(),
        };
        let mut selectors = vec![p.selector()?];
        while p.eat(',') {
            selectors.push(p.selector()?);
        }
        if let Some((at, c)) = p.chars.peek().copied() {
            return Err(p.error(at, &format!("unexpected {c:?}")));
        }
        Ok(Filter(selectors))
    }

    pub fn matches(&self, item: &impl Fields) -> bool {
        self.0.iter().all(|s| {
            let value = item.field(&s.path);
            match &s.op {
                Op::Present => value.is_some(),
                Op::Equal(v) => value.as_deref() == Some(v.as_str()),
                Op::NotEqual(v) => value.as_deref().unwrap_or("") != v,
                Op::Matches(re) => value.is_some_and(|x| re.is_match(&x)),
            }
        })
    }
}

struct Parser<'a> {
    text: &'a str,
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
}

impl Parser<'_> {
    fn error(&self, at: usize, what: &str) -> Error {
        Error::Invalid(format!("filter {:?} at byte {at}: {what}", self.text))
    }

    fn eat(&mut self, c: char) -> bool {
        self.chars.next_if(|(_, x)| *x == c).is_some()
    }

    fn selector(&mut self) -> Result<Selector> {
        let mut path = vec![self.field()?];
        while self.eat('.') {
            path.push(self.field()?);
        }
        let op = if self.eat('=') {
            self.expect('=')?;
            Op::Equal(self.value()?)
        } else if self.eat('!') {
            self.expect('=')?;
            Op::NotEqual(self.value()?)
        } else if self.eat('~') {
            self.expect('=')?;
            let at = self.pos();
            let v = self.value()?;
            Op::Matches(Regex::new(&v).map_err(|e| self.error(at, &e.to_string()))?)
        } else {
            Op::Present
        };
        Ok(Selector { path, op })
    }

    fn pos(&mut self) -> usize {
        self.chars.peek().map_or(self.text.len(), |(i, _)| *i)
    }

    fn expect(&mut self, c: char) -> Result<()> {
        let at = self.pos();
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.error(at, &format!("expected {c:?}")))
        }
    }

    fn field(&mut self) -> Result<String> {
        if self.chars.peek().is_some_and(|(_, c)| *c == '"') {
            return self.quoted();
        }
        let start = self.pos();
        while self
            .chars
            .next_if(|(_, c)| c.is_alphanumeric() || *c == '_')
            .is_some()
        {}
        let end = self.pos();
        if start == end {
            return Err(self.error(start, "expected a field name"));
        }
        Ok(self.text[start..end].to_string())
    }

    fn value(&mut self) -> Result<String> {
        if self.chars.peek().is_some_and(|(_, c)| *c == '"') {
            return self.quoted();
        }
        let start = self.pos();
        while self.chars.next_if(|(_, c)| *c != ',').is_some() {}
        Ok(self.text[start..self.pos()].to_string())
    }

    fn quoted(&mut self) -> Result<String> {
        let start = self.pos();
        self.expect('"')?;
        let mut out = String::new();
        loop {
            match self.chars.next() {
                None => return Err(self.error(start, "unterminated quoted string")),
                Some((_, '"')) => return Ok(out),
                Some((at, '\\')) => match self.chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, c @ ('"' | '\\' | '/'))) => out.push(c),
                    _ => return Err(self.error(at, "bad escape")),
                },
                Some((_, c)) => out.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Item(BTreeMap<&'static str, &'static str>);
    impl Fields for Item {
        fn field(&self, path: &[String]) -> Option<String> {
            self.0.get(path.join(".").as_str()).map(|v| v.to_string())
        }
    }

    fn item(pairs: &[(&'static str, &'static str)]) -> Item {
        Item(pairs.iter().copied().collect())
    }

    fn any(filters: &[&str]) -> AnyFilter {
        AnyFilter::parse(&filters.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn selectors_and_and_or() {
        let a = item(&[
            ("kind", "active"),
            ("name", "a"),
            ("labels.containerd.io/gc.root", "x"),
        ]);
        let b = item(&[("kind", "committed"), ("name", "b"), ("parent", "a")]);
        let f = any(&[r#"kind==active,labels."containerd.io/gc.root"==x"#]);
        assert!(f.matches(&a) && !f.matches(&b));
        let f = any(&["name==a", "name==b"]);
        assert!(f.matches(&a) && f.matches(&b));
        let f = any(&[r#"parent!="""#]);
        assert!(!f.matches(&a) && f.matches(&b));
        let f = any(&["parent"]);
        assert!(!f.matches(&a) && f.matches(&b));
        let f = any(&["name~=^[ab]$,kind!=view"]);
        assert!(f.matches(&a) && f.matches(&b));
        assert!(any(&[]).matches(&a));
    }

    #[test]
    fn bad_filters_name_the_problem() {
        for bad in [
            "kind=active",
            "==x",
            r#"labels."open"#,
            "name~=(",
            "kind==a b,",
        ] {
            let e = Filter::parse(bad).err();
            assert!(
                matches!(&e, Some(Error::Invalid(m)) if m.contains(&format!("{bad:?}"))),
                "{bad}: {e:?}"
            );
        }
    }
}

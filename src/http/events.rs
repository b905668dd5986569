//! `/search` answers decoded for people (the status page, the CLI table),
//! whole or one event at a time. `EventRow` itself lives in `model` (the
//! status page reads it without depending on `http`).

use std::io::{self, Read};

pub use crate::model::{decode_events, EventRow};

/// Calls `f` with each event of a `/search` success body read from
/// `body`, one at a time (memory stays one event whatever the answer's
/// size). Returns how many there were.
pub fn for_each_event(
    body: impl Read,
    f: &mut dyn FnMut(EventRow) -> io::Result<()>,
) -> Result<u64, serde_json::Error> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use std::fmt;

    /// Walks `{"data": {"events": [...]}}` down to the array.
    struct Path<'a, 'f> {
        depth: u8,
        f: &'a mut dyn FnMut(EventRow) -> io::Result<()>,
        n: &'a mut u64,
        _f: std::marker::PhantomData<&'f ()>,
    }

    impl<'de> DeserializeSeed<'de> for Path<'_, '_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            if self.depth == 2 {
                d.deserialize_seq(self)
            } else {
                d.deserialize_map(self)
            }
        }
    }

    impl<'de> Visitor<'de> for Path<'_, '_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a /search answer")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let want = if self.depth == 0 { "data" } else { "events" };
            let mut this = Some(self);
            while let Some(key) = map.next_key::<String>()? {
                match (key == want, this.take()) {
                    (true, Some(p)) => map.next_value_seed(Path {
                        depth: p.depth + 1,
                        f: p.f,
                        n: p.n,
                        _f: std::marker::PhantomData,
                    })?,
                    (_, p) => {
                        this = p;
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some(e) = seq.next_element::<EventRow>()? {
                *self.n += 1;
                (self.f)(e).map_err(serde::de::Error::custom)?;
            }
            Ok(())
        }
    }

    let mut n = 0;
    let mut de = serde_json::Deserializer::from_reader(io::BufReader::new(body));
    Path {
        depth: 0,
        f,
        n: &mut n,
        _f: std::marker::PhantomData,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(n)
}

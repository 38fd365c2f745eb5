//! `skein_gate_native`: the gate's `/v2/import/batch` fast lane (decision 12, gate part).
//!
//! `batch` reads a whole `/batch` body and, only when it can decide all of it, hands back what
//! `services.gate.records.batch_tables` would make of it: the table name, key names, table
//! version, the schema's bytes and the record lines, joined by newlines. Whenever it cannot
//! decide (any error in the body, a schema keyword it does not run, a duplicate key, a number
//! it cannot read as Python does, too deep a nesting) it answers `None` and the gate's Python
//! path reads the body from the start: that path stays the definition, and it alone words the
//! error bodies. So this only ever narrows what it accepts.
//!
//! What it runs of JSON Schema (fastjsonschema's draft-06+ semantics, formats and defaults off,
//! as the gate compiles them): `type`, `properties`, `required`, `additionalProperties`, `items`
//! (one schema), `minLength`, `maxLength`, `minimum`, `maximum`, `exclusiveMinimum`,
//! `exclusiveMaximum`; `format` and every keyword fastjsonschema does not know are annotations.
//! Any other keyword fastjsonschema runs (`$ref`, `anyOf`, `pattern`, `enum`, ...) leaves the
//! body to Python. The gate still compiles the schema with fastjsonschema (its bounds and its
//! errors) before it uses these lines. `tests/unit/test_gate_fastlane.py` holds the lines to
//! the Python path's on generated bodies.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::panic::catch_unwind;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// Why a body is left to Python: nothing more is said (Python words every error).
#[derive(Debug)]
struct Refuse;

type Decided<T> = Result<T, Refuse>;

const RESERVED: &str = "_sdc";
const MAX_NAME_CHARS: usize = 255;
const MAX_SEQUENCE: u64 = i64::MAX as u64;
/// 2**63: a float this large might be an integer literal serde_json read as a float (Python
/// reads it exactly), so it is left to Python.
const FLOAT_LIMIT: f64 = 9_223_372_036_854_775_808.0;
/// 2**53: integers up to this compare with a float exactly once converted.
const EXACT_IN_FLOAT: i128 = 1 << 53;

// ------------------------------------------------------------------------------ the schema

/// JSON Schema's types as one bit each (a value's kind is checked against the node's mask).
const INTEGER: u8 = 1;
const NUMBER: u8 = 2;
const STRING: u8 = 4;
const BOOLEAN: u8 = 8;
const NULL: u8 = 16;
const ARRAY: u8 = 32;
const OBJECT: u8 = 64;
const ANY_TYPE: u8 = 127;

/// The keywords `compile` runs (`format` as the annotation the gate compiles it as).
const RUN: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "format",
];

/// fastjsonschema's keywords (draft-07 and its 2019 generator) this lane does not run: a node
/// with any of them leaves the body to Python. (`tests/unit/test_gate_fastlane.py` checks that
/// these and `RUN` cover every keyword fastjsonschema runs.)
const NOT_RUN: &[&str] = &[
    "$ref",
    "enum",
    "const",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "pattern",
    "multipleOf",
    "minItems",
    "maxItems",
    "uniqueItems",
    "contains",
    "minProperties",
    "maxProperties",
    "dependencies",
    "patternProperties",
    "propertyNames",
    "contentEncoding",
    "contentMediaType",
];

#[derive(Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    fn of(value: &Value) -> Decided<Num> {
        let Value::Number(n) = value else {
            return Err(Refuse);
        };
        if let Some(i) = n.as_i64() {
            Ok(Num::Int(i.into()))
        } else if let Some(u) = n.as_u64() {
            Ok(Num::Int(u.into()))
        } else {
            match n.as_f64() {
                // An integer literal beyond 64 bits reads as a float here, exactly in Python.
                Some(f) if f.abs() < FLOAT_LIMIT => Ok(Num::Float(f)),
                _ => Err(Refuse),
            }
        }
    }

    /// Python's comparison of the two, where it is certain here.
    fn compare(self, other: Num) -> Option<Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (Num::Float(a), Num::Float(b)) => a.partial_cmp(&b),
            (Num::Int(a), Num::Float(b)) => exact(a)?.partial_cmp(&b),
            (Num::Float(a), Num::Int(b)) => a.partial_cmp(&exact(b)?),
        }
    }
}

fn exact(i: i128) -> Option<f64> {
    (-EXACT_IN_FLOAT..=EXACT_IN_FLOAT)
        .contains(&i)
        .then_some(i as f64)
}

#[derive(Clone, Copy)]
enum Limit {
    Minimum,
    Maximum,
    ExclusiveMinimum,
    ExclusiveMaximum,
}

impl Limit {
    fn holds(self, value: Num, bound: Num) -> bool {
        match (self, value.compare(bound)) {
            (_, None) => false, // not certain: Python decides
            (Limit::Minimum, Some(o)) => o != Ordering::Less,
            (Limit::Maximum, Some(o)) => o != Ordering::Greater,
            (Limit::ExclusiveMinimum, Some(o)) => o == Ordering::Greater,
            (Limit::ExclusiveMaximum, Some(o)) => o == Ordering::Less,
        }
    }
}

enum Extra {
    Any,
    Never,
    Schema(Box<Node>),
}

/// One compiled schema node (`compile` gives `None` for the schema `true`: anything goes).
struct Node {
    types: u8,
    properties: Vec<(String, Option<Node>)>,
    index: HashMap<String, usize>, // by name, where there are many properties
    required: Vec<String>,
    additional: Extra,
    items: Option<Box<Node>>,
    min_length: Option<f64>,
    max_length: Option<f64>,
    bounds: Vec<(Limit, Num)>,
}

impl Node {
    /// Up to this many properties are found by a scan (faster than hashing their names).
    const FEW: usize = 16;

    fn property(&self, name: &str) -> Option<&Option<Node>> {
        if self.index.is_empty() {
            self.properties
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, sub)| sub)
        } else {
            self.index.get(name).map(|&i| &self.properties[i].1)
        }
    }
}

fn length(value: &Value) -> Decided<f64> {
    match Num::of(value)? {
        Num::Int(i) => Ok(i as f64),
        Num::Float(f) => Ok(f),
    }
}

fn type_bit(name: &Value) -> Decided<u8> {
    Ok(match name.as_str().ok_or(Refuse)? {
        "integer" => INTEGER,
        "number" => NUMBER,
        "string" => STRING,
        "boolean" => BOOLEAN,
        "null" => NULL,
        "array" => ARRAY,
        "object" => OBJECT,
        _ => return Err(Refuse),
    })
}

/// The node for `schema`; `Ok(None)` for a schema that takes anything.
fn compile(schema: &Value) -> Decided<Option<Node>> {
    let map = match schema {
        Value::Bool(true) => return Ok(None),
        Value::Object(map) => map,
        _ => return Err(Refuse), // false, or what fastjsonschema refuses to compile
    };
    let mut node = Node {
        types: ANY_TYPE,
        properties: Vec::new(),
        index: HashMap::new(),
        required: Vec::new(),
        additional: Extra::Any,
        items: None,
        min_length: None,
        max_length: None,
        bounds: Vec::new(),
    };
    for (key, value) in map {
        match key.as_str() {
            "type" => {
                node.types = match value {
                    Value::Array(names) => names.iter().try_fold(0, |m, n| Ok(m | type_bit(n)?))?,
                    name => type_bit(name)?,
                }
            }
            "properties" => {
                let Value::Object(properties) = value else {
                    return Err(Refuse);
                };
                for (name, sub) in properties {
                    node.properties.push((name.clone(), compile(sub)?));
                }
                if node.properties.len() > Node::FEW {
                    let names = node.properties.iter().enumerate();
                    node.index = names.map(|(i, (name, _))| (name.clone(), i)).collect();
                }
            }
            "required" => {
                let Value::Array(names) = value else {
                    return Err(Refuse);
                };
                for name in names {
                    node.required.push(name.as_str().ok_or(Refuse)?.to_owned());
                }
                // fastjsonschema refuses a repeated name; here it would cost every object.
                let unique: HashSet<&String> = node.required.iter().collect();
                if unique.len() != node.required.len() {
                    return Err(Refuse);
                }
            }
            "additionalProperties" => {
                node.additional = match value {
                    Value::Bool(false) => Extra::Never,
                    sub => compile(sub)?.map_or(Extra::Any, |n| Extra::Schema(Box::new(n))),
                }
            }
            "items" => {
                if !value.is_object() && value != &Value::Bool(true) {
                    return Err(Refuse); // a list of schemas, or false
                }
                node.items = compile(value)?.map(Box::new);
            }
            "minLength" => node.min_length = Some(length(value)?),
            "maxLength" => node.max_length = Some(length(value)?),
            "minimum" => node.bounds.push((Limit::Minimum, Num::of(value)?)),
            "maximum" => node.bounds.push((Limit::Maximum, Num::of(value)?)),
            "exclusiveMinimum" => node.bounds.push((Limit::ExclusiveMinimum, Num::of(value)?)),
            "exclusiveMaximum" => node.bounds.push((Limit::ExclusiveMaximum, Num::of(value)?)),
            "format" => {} // an annotation, as the gate compiles schemas
            other if NOT_RUN.contains(&other) || RUN.contains(&other) => return Err(Refuse),
            _ => {} // an annotation (title, default, ...): fastjsonschema ignores it too
        }
    }
    Ok(Some(node))
}

/// The schema's nesting of containers (an object or array counts one; a scalar none); refused
/// if it holds a number serde_json read as a float that Python may read as an integer beyond
/// 64 bits (the route reads the schema's bytes with orjson, which does not).
fn depth(value: &Value) -> Decided<usize> {
    fn deepest<'v>(values: impl Iterator<Item = &'v Value>) -> Decided<usize> {
        values.map(depth).try_fold(0, |most, d| Ok(most.max(d?)))
    }
    match value {
        Value::Array(items) => Ok(1 + deepest(items.iter())?),
        Value::Object(map) => Ok(1 + deepest(map.values())?),
        Value::Number(n) if n.as_f64().is_some_and(|f| f.abs() >= FLOAT_LIMIT) => Err(Refuse),
        _ => Ok(0),
    }
}

// ------------------------------------------------------------------------------ a record's values

/// What the lane knows as it reads: the limits, and the lines written so far.
struct Lane<'k> {
    max_depth: usize,
    max_key_length: usize,
    key_names: &'k [String],
    out: Vec<u8>,
}

/// What a value was, as far as the key checks need it.
enum Got {
    Null,
    Str { too_long: bool }, // longer than the key limit, in characters
    Other,
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaping is orjson's: ", \ and control characters only.
    s.serialize(&mut serde_json::Serializer::new(out))
        .expect("writing to a Vec cannot fail");
}

/// A string as read: one serde_json borrowed from the body had no escape, so it holds no
/// character JSON escapes (no quote, no backslash; serde_json refuses raw control characters)
/// and its bytes are written as they are.
#[allow(clippy::ptr_arg)] // the variant says whether it was escaped
fn write_read(out: &mut Vec<u8>, s: &Cow<'_, str>) {
    match s {
        Cow::Borrowed(plain) => {
            out.push(b'"');
            out.extend_from_slice(plain.as_bytes());
            out.push(b'"');
        }
        Cow::Owned(unescaped) => write_str(out, unescaped),
    }
}

/// A value read, checked against its schema node (`None`: anything) and written to the lane.
struct Checked<'a, 'k> {
    node: Option<&'a Node>,
    depth: usize, // the containing container's
    lane: &'a mut Lane<'k>,
    data: bool, // the record's `data` object itself (reserved names and key names are checked)
}

impl Checked<'_, '_> {
    fn allows(&self, kind: u8) -> bool {
        // A record's data must be an object whatever its schema says.
        (!self.data || kind == OBJECT) && self.node.is_none_or(|n| n.types & kind != 0)
    }

    fn string<E: de::Error>(self, v: Cow<'_, str>) -> Result<Got, E> {
        if !self.allows(STRING) {
            return Err(refused());
        }
        let mut chars = None;
        if let Some(node) = self.node {
            if node.min_length.is_some() || node.max_length.is_some() {
                let n = v.chars().count() as f64;
                let within = node.min_length.is_none_or(|m| n >= m)
                    && node.max_length.is_none_or(|m| n <= m);
                if !within {
                    return Err(refused());
                }
                chars = Some(n as usize);
            }
        }
        // Characters <= bytes: only a string of more bytes than the limit is counted.
        let limit = self.lane.max_key_length;
        let too_long = v.len() > limit && chars.unwrap_or_else(|| v.chars().count()) > limit;
        write_read(&mut self.lane.out, &v);
        Ok(Got::Str { too_long })
    }

    fn integer<E: de::Error>(self, v: i128) -> Result<Got, E> {
        if !self.number(Num::Int(v), INTEGER | NUMBER) {
            return Err(refused());
        }
        self.lane
            .out
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        Ok(Got::Other)
    }

    fn number(&self, value: Num, kind: u8) -> bool {
        self.allows(kind)
            && self
                .node
                .is_none_or(|n| n.bounds.iter().all(|&(b, bound)| b.holds(value, bound)))
    }
}

impl<'de> DeserializeSeed<'de> for Checked<'_, '_> {
    type Value = Got;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Got, D::Error> {
        d.deserialize_any(self)
    }
}

fn refused<E: de::Error>() -> E {
    E::custom("left to Python")
}

impl<'de> Visitor<'de> for Checked<'_, '_> {
    type Value = Got;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value its schema takes")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Got, E> {
        if !self.allows(NULL) {
            return Err(refused());
        }
        self.lane.out.extend_from_slice(b"null");
        Ok(Got::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Got, E> {
        if !self.allows(BOOLEAN) {
            return Err(refused());
        }
        self.lane
            .out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(Got::Other)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Got, E> {
        self.integer(v.into())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Got, E> {
        self.integer(v.into())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Got, E> {
        // Beyond 2**63 it may have been an integer literal; a negative zero may have been the
        // literal -0 (orjson reads the int 0): both are Python's to read.
        if v.abs() >= FLOAT_LIMIT || (v == 0.0 && v.is_sign_negative()) {
            return Err(refused());
        }
        let kind = if v.fract() == 0.0 {
            INTEGER | NUMBER
        } else {
            NUMBER
        };
        if !self.number(Num::Float(v), kind) {
            return Err(refused());
        }
        v.serialize(&mut serde_json::Serializer::new(&mut self.lane.out))
            .map_err(|_| refused::<E>())?;
        Ok(Got::Other)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Got, E> {
        self.string(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Got, E> {
        self.string(Cow::Owned(v.to_owned())) // escaped in the body: rare
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Got, A::Error> {
        let depth = self.depth + 1;
        if !self.allows(ARRAY) || depth > self.lane.max_depth {
            return Err(refused());
        }
        let items = self.node.and_then(|n| n.items.as_deref());
        self.lane.out.push(b'[');
        let mut first = true;
        loop {
            if !first {
                self.lane.out.push(b',');
            }
            let item = Checked {
                node: items,
                depth,
                lane: &mut *self.lane,
                data: false,
            };
            if seq.next_element_seed(item)?.is_none() {
                if !first {
                    self.lane.out.pop(); // the comma of an element that was not there
                }
                break;
            }
            first = false;
        }
        self.lane.out.push(b']');
        Ok(Got::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Got, A::Error> {
        let depth = self.depth + 1;
        if !self.allows(OBJECT) || depth > self.lane.max_depth {
            return Err(refused());
        }
        let mut seen = Keys::default();
        let mut keys_found = vec![
            false;
            if self.data {
                self.lane.key_names.len()
            } else {
                0
            }
        ];
        self.lane.out.push(b'{');
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if self.data && key.starts_with(RESERVED) {
                return Err(refused());
            }
            let child = match self.node {
                None => None,
                Some(node) => match node.property(&key) {
                    Some(sub) => sub.as_ref(),
                    None => match &node.additional {
                        Extra::Any => None,
                        Extra::Never => return Err(refused()),
                        Extra::Schema(sub) => Some(&**sub),
                    },
                },
            };
            if !seen.is_empty() {
                self.lane.out.push(b',');
            }
            write_read(&mut self.lane.out, &key);
            self.lane.out.push(b':');
            let got = map.next_value_seed(Checked {
                node: child,
                depth,
                lane: &mut *self.lane,
                data: false,
            })?;
            if self.data {
                if let Some(i) = self.lane.key_names.iter().position(|k| *k == *key) {
                    keys_found[i] = match got {
                        Got::Null => false,
                        Got::Str { too_long } => !too_long,
                        Got::Other => true,
                    };
                }
            }
            if !seen.insert(key) {
                return Err(refused()); // a duplicate key: Python keeps the last
            }
        }
        self.lane.out.push(b'}');
        if let Some(node) = self.node {
            if !node.required.iter().all(|r| seen.contains(r)) {
                return Err(refused());
            }
        }
        if !keys_found.iter().all(|&found| found) {
            return Err(refused());
        }
        Ok(Got::Other)
    }
}

/// An object's keys so far: a short list, a set once it grows (no quadratic cost to a client
/// sending an object of many keys).
struct Keys<'de> {
    few: [Cow<'de, str>; KEYS_LISTED],
    listed: usize,
    many: HashSet<Cow<'de, str>>,
}

const KEYS_LISTED: usize = 24;

impl Default for Keys<'_> {
    fn default() -> Self {
        Keys {
            few: std::array::from_fn(|_| Cow::Borrowed("")),
            listed: 0,
            many: HashSet::new(),
        }
    }
}

impl<'de> Keys<'de> {
    fn is_empty(&self) -> bool {
        self.listed == 0
    }

    fn contains(&self, key: &str) -> bool {
        self.few[..self.listed].iter().any(|k| k == key) || self.many.contains(key)
    }

    /// False if it was there already.
    fn insert(&mut self, key: Cow<'de, str>) -> bool {
        if self.contains(&key) {
            return false;
        }
        if self.listed < KEYS_LISTED {
            self.few[self.listed] = key;
            self.listed += 1;
        } else {
            self.many.insert(key);
        }
        true
    }
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// Any value, read only for its nesting (a field the Python path reads past).
#[derive(Clone, Copy)]
struct Skip {
    depth: usize, // the containing container's
    max_depth: usize,
}

impl Skip {
    /// The seed for a container's values, or a refusal past the nesting limit.
    fn inner<E: de::Error>(self) -> Result<Skip, E> {
        let depth = self.depth + 1;
        if depth > self.max_depth {
            return Err(refused());
        }
        Ok(Skip { depth, ..self })
    }
}

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.inner()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.inner()?;
        while map.next_key_seed(KeySeed)?.is_some() {
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------ names

/// More key names than this are Python's to check (no table has so many).
const MAX_KEY_NAMES: usize = 32;

fn key_names_ok(names: &[String]) -> bool {
    let unique: HashSet<&String> = names.iter().collect();
    names.len() <= MAX_KEY_NAMES && unique.len() == names.len() && names.iter().all(|k| name_ok(k))
}

fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && !name.contains('\0')
        && !name.starts_with(RESERVED)
}

/// A subset of what Python 3.11's `datetime.fromisoformat` takes (as the loader's native plans
/// check it, `services/loaders/native/src/lib.rs`): `YYYY-MM-DD`, optionally `[T ]HH:MM:SS`,
/// `.f` to `.ffffff`, `Z` or `±HH:MM`.
fn is_datetime(s: &[u8]) -> bool {
    let digits = |from: usize, to: usize| -> Option<u32> {
        s.get(from..to)?.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let date = || -> Option<()> {
        let (year, month, day) = (digits(0, 4)?, digits(5, 7)?, digits(8, 10)?);
        (s[4] == b'-' && s[7] == b'-').then_some(())?;
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        let days = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return None,
        };
        (year >= 1 && (1..=days).contains(&day)).then_some(())
    };
    let time = || -> Option<()> {
        (matches!(s[10], b'T' | b' ') && s.get(13) == Some(&b':') && s.get(16) == Some(&b':'))
            .then_some(())?;
        let (hour, minute, second) = (digits(11, 13)?, digits(14, 16)?, digits(17, 19)?);
        (hour < 24 && minute < 60 && second < 60).then_some(())?;
        let mut at = 19;
        if s.get(at) == Some(&b'.') {
            let run = s[at + 1..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            (1..=6).contains(&run).then_some(())?;
            at += 1 + run;
        }
        match &s[at..] {
            [] | [b'Z'] => Some(()),
            [b'+' | b'-', ..] if s.len() == at + 6 && s[at + 3] == b':' => {
                let (h, m) = (digits(at + 1, at + 3)?, digits(at + 4, at + 6)?);
                (h < 24 && m < 60).then_some(())
            }
            _ => None,
        }
    };
    s.len() >= 10 && date().is_some() && (s.len() == 10 || time().is_some())
}

// ------------------------------------------------------------------------------ one message

#[derive(Clone, Copy, PartialEq)]
enum Action {
    Upsert,
    Activate,
}

struct ActionSeed;

impl<'de> DeserializeSeed<'de> for ActionSeed {
    type Value = Action;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Action, D::Error> {
        match KeySeed.deserialize(d)?.as_ref() {
            "upsert" => Ok(Action::Upsert),
            "activate_version" => Ok(Action::Activate),
            _ => Err(refused()),
        }
    }
}

/// An integer in 0..=2**63-1 (a sequence); anything else is refused.
struct Sequence;

impl<'de> DeserializeSeed<'de> for Sequence {
    type Value = u64;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Sequence {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a sequence")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| refused())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        if v <= MAX_SEQUENCE {
            Ok(v)
        } else {
            Err(refused())
        }
    }
}

/// `time_extracted`: null, or a date-time string the lane knows Python takes.
struct Extracted;

impl<'de> DeserializeSeed<'de> for Extracted {
    type Value = Option<Cow<'de, str>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Extracted {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a date-time or null")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        is_datetime(v.as_bytes())
            .then_some(Some(Cow::Borrowed(v)))
            .ok_or_else(refused)
    }
}

/// The lines written and where each ends.
type Lines = (Vec<u8>, Vec<usize>);

/// The records' array: each message checked and its line written, in order.
struct Messages<'a> {
    schema: Option<&'a Node>,
    key_names: &'a [String],
    limits: Limits,
    size_hint: usize,
}

impl<'de> DeserializeSeed<'de> for Messages<'_> {
    type Value = Lines;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Lines, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Messages<'_> {
    type Value = Lines;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Lines, A::Error> {
        let mut lane = Lane {
            max_depth: self.limits.max_depth,
            max_key_length: self.limits.max_key_length,
            key_names: self.key_names,
            out: Vec::with_capacity(self.size_hint),
        };
        let mut ends = Vec::new();
        loop {
            if !ends.is_empty() {
                lane.out.push(b'\n');
            }
            let message = Message {
                schema: self.schema,
                lane: &mut lane,
            };
            if seq.next_element_seed(message)?.is_none() {
                if !ends.is_empty() {
                    lane.out.pop();
                }
                break;
            }
            ends.push(lane.out.len());
            if ends.len() > self.limits.max_records {
                return Err(refused());
            }
        }
        if ends.is_empty() {
            return Err(refused());
        }
        Ok((lane.out, ends))
    }
}

struct Message<'a, 'k> {
    schema: Option<&'a Node>,
    lane: &'a mut Lane<'k>,
}

impl<'de> DeserializeSeed<'de> for Message<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

/// Depths of a record's parts: the body 1, the messages array 2, a message 3.
const MESSAGE_DEPTH: usize = 3;

impl<'de> Visitor<'de> for Message<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a record")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.lane.max_depth < MESSAGE_DEPTH {
            return Err(refused());
        }
        let start = self.lane.out.len();
        let (mut action, mut sequence, mut extracted) = (None, None, None);
        let mut raw_data: Option<&'de RawValue> = None;
        let (mut written, mut seen_data, mut seen_extracted) = (false, false, false);
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match key.as_ref() {
                "action" if action.is_none() => action = Some(map.next_value_seed(ActionSeed)?),
                "sequence" if sequence.is_none() => sequence = Some(map.next_value_seed(Sequence)?),
                "time_extracted" if !seen_extracted => {
                    seen_extracted = true;
                    extracted = map.next_value_seed(Extracted)?;
                }
                "data" if !seen_data => {
                    seen_data = true;
                    if let (Some(Action::Upsert), Some(seq)) = (action, sequence) {
                        write_prefix(&mut self.lane.out, seq);
                        data(&mut map, self.schema, &mut *self.lane)?;
                        written = true;
                    } else {
                        raw_data = Some(map.next_value()?);
                    }
                }
                "action" | "sequence" | "time_extracted" | "data" => return Err(refused()),
                _ => map.next_value_seed(Skip {
                    depth: MESSAGE_DEPTH,
                    max_depth: self.lane.max_depth,
                })?,
            }
        }
        let sequence = sequence.ok_or_else(refused)?;
        match action.ok_or_else(refused)? {
            Action::Activate => {
                if let Some(raw) = raw_data {
                    // Python reads past it; only its nesting counts.
                    let mut de = serde_json::Deserializer::from_str(raw.get());
                    Skip {
                        depth: MESSAGE_DEPTH,
                        max_depth: self.lane.max_depth,
                    }
                    .deserialize(&mut de)
                    .map_err(|_| refused::<A::Error>())?;
                }
                self.lane.out.truncate(start);
                self.lane
                    .out
                    .extend_from_slice(b"{\"action\":\"activate_version\",\"sequence\":");
                self.lane
                    .out
                    .extend_from_slice(itoa::Buffer::new().format(sequence).as_bytes());
                self.lane.out.push(b'}');
                return Ok(());
            }
            Action::Upsert if !written => {
                let raw = raw_data.ok_or_else(refused)?;
                write_prefix(&mut self.lane.out, sequence);
                let mut de = serde_json::Deserializer::from_str(raw.get());
                Checked {
                    node: self.schema,
                    depth: MESSAGE_DEPTH,
                    lane: &mut *self.lane,
                    data: true,
                }
                .deserialize(&mut de)
                .map_err(|_| refused::<A::Error>())?;
            }
            Action::Upsert => {}
        }
        if let Some(at) = extracted {
            self.lane.out.extend_from_slice(b",\"time_extracted\":");
            write_read(&mut self.lane.out, &at);
        }
        self.lane.out.push(b'}');
        Ok(())
    }
}

fn write_prefix(out: &mut Vec<u8>, sequence: u64) {
    out.extend_from_slice(b"{\"action\":\"upsert\",\"sequence\":");
    out.extend_from_slice(itoa::Buffer::new().format(sequence).as_bytes());
    out.extend_from_slice(b",\"data\":");
}

/// A record's `data`, read straight from the message (its action and sequence came first).
fn data<'de, A: MapAccess<'de>>(
    map: &mut A,
    schema: Option<&Node>,
    lane: &mut Lane<'_>,
) -> Result<(), A::Error> {
    map.next_value_seed(Checked {
        node: schema,
        depth: MESSAGE_DEPTH,
        lane,
        data: true,
    })?;
    Ok(())
}

// ------------------------------------------------------------------------------ the body

/// The body's fields, as slices of it where they are read later.
#[derive(Default)]
struct Fields<'de> {
    table_name: Option<Cow<'de, str>>,
    schema: Option<&'de RawValue>,
    key_names: Option<Vec<String>>,
    table_version: Option<i128>,
    messages: Option<&'de RawValue>,
    lines: Option<Lines>, // read as they came, where the schema and key names came first
}

#[derive(Clone, Copy)]
struct Limits {
    max_depth: usize,
    max_records: usize,
    max_key_length: usize,
    max_schema_bytes: usize,
}

struct Body {
    limits: Limits,
}

impl<'de> DeserializeSeed<'de> for Body {
    type Value = Fields<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Fields<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Body {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a /batch body")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        let mut fields = Fields::default();
        let mut seen = Keys::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match key.as_ref() {
                "table_name" => fields.table_name = Some(map.next_value_seed(KeySeed)?),
                "schema" => fields.schema = Some(map.next_value()?),
                "messages" => match (fields.schema, &fields.key_names) {
                    // The usual order: the records are read as they come, in one pass.
                    (Some(schema), Some(key_names)) => {
                        let node =
                            schema_node(schema, self.limits).map_err(|_| refused::<A::Error>())?;
                        fields.lines = Some(map.next_value_seed(Messages {
                            schema: node.as_ref(),
                            key_names,
                            limits: self.limits,
                            size_hint: 1 << 16,
                        })?);
                    }
                    _ => fields.messages = Some(map.next_value()?),
                },
                "key_names" => {
                    let names: Option<Vec<String>> = map.next_value()?;
                    let names = names.unwrap_or_default();
                    // Checked before any record is: each record looks its keys up in them.
                    if !key_names_ok(&names) {
                        return Err(refused());
                    }
                    fields.key_names = Some(names);
                }
                "table_version" => {
                    fields.table_version = map.next_value_seed(Version)?;
                }
                _ => map.next_value_seed(Skip {
                    depth: 1,
                    max_depth: self.limits.max_depth,
                })?,
            }
            if !seen.insert(key) {
                return Err(refused());
            }
        }
        Ok(fields)
    }
}

/// `table_version`: null or an integer (64 bits here; a longer one is Python's).
struct Version;

impl<'de> DeserializeSeed<'de> for Version {
    type Value = Option<i128>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<i128>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Version {
    type Value = Option<i128>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer or null")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<i128>, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<i128>, E> {
        Ok(Some(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<i128>, E> {
        Ok(Some(v.into()))
    }
}

/// The compiled form of the body's schema: an object with `properties`, within the nesting
/// limit (the body counts one), of keywords this lane runs.
fn schema_node(raw: &RawValue, limits: Limits) -> Decided<Option<Node>> {
    if raw.get().len() > limits.max_schema_bytes {
        return Err(Refuse); // the route refuses it (SchemaCache), before any record is read
    }
    let max_depth = limits.max_depth;
    let schema: Value = serde_json::from_str(raw.get()).map_err(|_| Refuse)?;
    if !schema.get("properties").is_some_and(Value::is_object) || 1 + depth(&schema)? > max_depth {
        return Err(Refuse);
    }
    if let Some(draft) = schema.get("$schema") {
        // fastjsonschema picks draft-04's rules (an integer is never a float) by this name.
        if draft.as_str().is_none_or(|d| d.contains("draft-04")) {
            return Err(Refuse);
        }
    }
    compile(&schema)
}

/// What the lane made of a body it decided.
struct Decision<'b> {
    table_name: String,
    key_names: Vec<String>,
    table_version: Option<i128>,
    schema: &'b [u8],
    lines: Vec<u8>,
    ends: Vec<usize>,
}

fn decide(body: &[u8], limits: Limits) -> Decided<Decision<'_>> {
    if limits.max_depth < 2 {
        return Err(Refuse);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let fields = Body { limits }.deserialize(&mut de).map_err(|_| Refuse)?;
    de.end().map_err(|_| Refuse)?;

    let table_name = fields.table_name.ok_or(Refuse)?.into_owned();
    let key_names = fields.key_names.unwrap_or_default();
    if !name_ok(&table_name) {
        return Err(Refuse);
    }
    let schema = fields.schema.ok_or(Refuse)?;
    let (lines, ends) = match (fields.lines, fields.messages) {
        (Some(lines), _) => lines,
        (None, Some(messages)) => {
            let node = schema_node(schema, limits)?;
            let mut de = serde_json::Deserializer::from_str(messages.get());
            Messages {
                schema: node.as_ref(),
                key_names: &key_names,
                limits,
                size_hint: messages.get().len() + messages.get().len() / 4,
            }
            .deserialize(&mut de)
            .map_err(|_| Refuse)?
        }
        (None, None) => return Err(Refuse),
    };
    Ok(Decision {
        table_name,
        key_names,
        table_version: fields.table_version,
        schema: schema.get().as_bytes(),
        lines,
        ends,
    })
}

/// The fast lane over one `/batch` body: `(table_name, key_names, table_version, schema bytes,
/// lines, ends)`, the lines joined by newlines and `ends` each line's end in them; `None`
/// where the body is the Python path's to read.
#[pyfunction]
#[pyo3(signature = (body, max_depth, max_records, max_key_length, max_schema_bytes))]
fn batch<'py>(
    py: Python<'py>,
    body: &[u8],
    max_depth: usize,
    max_records: usize,
    max_key_length: usize,
    max_schema_bytes: usize,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let limits = Limits {
        max_depth,
        max_records,
        max_key_length,
        max_schema_bytes,
    };
    // A panic (a bug here) leaves the body to Python like any refusal, never a 500.
    let decided = py.allow_threads(|| catch_unwind(|| decide(body, limits)));
    let Ok(Ok(d)) = decided else {
        return Ok(None);
    };
    let parts = (
        d.table_name,
        d.key_names,
        d.table_version,
        PyBytes::new(py, d.schema),
        PyBytes::new(py, &d.lines),
        PyList::new(py, d.ends)?,
    );
    Ok(Some(parts.into_pyobject(py)?.into_any()))
}

/// Whether the lane takes `text` as a `time_extracted` (a subset of `fromisoformat`'s forms).
#[pyfunction]
fn takes_datetime(text: &str) -> bool {
    is_datetime(text.as_bytes())
}

/// The schema keywords the lane runs, and those it leaves to Python.
#[pyfunction]
fn keywords() -> (Vec<&'static str>, Vec<&'static str>) {
    (RUN.to_vec(), NOT_RUN.to_vec())
}

#[pymodule]
fn skein_gate_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(batch, m)?)?;
    m.add_function(wrap_pyfunction!(keywords, m)?)?;
    m.add_function(wrap_pyfunction!(takes_datetime, m)?)?;
    Ok(())
}

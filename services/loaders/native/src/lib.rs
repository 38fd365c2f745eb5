//! `skein_loader_native`: the Postgres loader's compiled record plans (decision 4), run natively
//! over a batch object's record lines (decision 12).
//!
//! Python stays the definition: `services/loaders/core/fastplan.py` compiles a plan from the
//! general path's decisions, and `services/loaders/core/native.py` hands the same plan here as
//! a `Plan`. `stage` then takes record lines one after another for as long as one of the plans
//! takes each, exactly as the Python plans would, and stops at the first line it does not take:
//! Python reads that line (it may be another shape, a header, not JSON at all) and calls again.
//! So this only ever narrows what it accepts; whatever it refuses, Python decides.
//!
//! What it takes: a *plain* line (no backslash: no JSON escape, so every string is its bytes
//! between quotes) that serde_json parses, an `upsert` envelope with an int64 sequence, and
//! `data` of exactly the plan's shape (the same keys, each value of the same JSON type, within
//! the same ranges as the Python plan checks; a date-time in Python's `fromisoformat`'s commonest
//! forms). Its staged line is the Python plan's, byte for byte: `tests/unit/test_loader_fastplan.py`
//! holds the two to that on generated records.

use std::collections::HashMap;
use std::fmt;

use memchr::memmem;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, Visitor};

/// A leaf's JSON type (Python's) and its column type (`ColumnType`), as the plan was compiled.
#[derive(Clone, Copy)]
enum LeafKind {
    Text,      // str, TEXT
    Timestamp, // str, TIMESTAMP: only a date-time
    BigInt,    // int, BIGINT
    IntDouble, // int, DOUBLE (a schema "number" holding an integer): rendered as a float
    Double,    // float, DOUBLE
    Boolean,   // bool, BOOLEAN
}

enum Node {
    Object {
        size: usize,
        keys: Vec<String>, // in the order of the record the plan was compiled from
        index: HashMap<String, usize>,
        children: Vec<Node>,
    },
    Null,
    Leaf {
        kind: LeafKind,
        cell: usize,
    },
}

/// What a staged field holds: a data cell, a system column, or nothing (NULL).
#[derive(Clone, Copy)]
enum Slot {
    Empty,
    Cell(usize),
    ReceivedAt,
    Sequence,
    BatchedAt,
    TableVersion,
    ExtractedAt,
}

#[derive(Clone, Copy)]
enum Cell<'a> {
    Str(&'a str),
    Int(i64),
    IntDouble(i64),
    Double(f64),
    Bool(bool),
}

const MAX_OBJECT: usize = 512; // keys per object a plan matches (fastplan compiles up to 400 leaves)
const FLOAT_LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2**63, as fastplan's _FLOAT_LIMIT

/// One compiled plan (`fastplan.compile_plan`'s shape and layout), for `stage`.
#[pyclass(frozen, module = "skein_loader_native")]
struct Plan {
    root: Node,
    cells: usize,
    slots: Vec<Slot>,
}

fn leaf_kind(python_type: &str, kind: &str) -> Option<LeafKind> {
    Some(match (python_type, kind) {
        ("str", "st") => LeafKind::Text,
        ("str", "ti") => LeafKind::Timestamp,
        ("int", "bi") => LeafKind::BigInt,
        ("int", "do") => LeafKind::IntDouble,
        ("float", "do") => LeafKind::Double,
        ("bool", "bo") => LeafKind::Boolean,
        _ => return None,
    })
}

fn insert(node: &mut Node, path: &[String], leaf: Node) -> PyResult<()> {
    let Node::Object {
        keys,
        index,
        children,
        ..
    } = node
    else {
        return Err(PyValueError::new_err("a path runs through a scalar"));
    };
    let (first, rest) = path
        .split_first()
        .ok_or_else(|| PyValueError::new_err("an empty path"))?;
    let at = match index.get(first) {
        Some(&at) => at,
        None => {
            if !rest.is_empty() {
                return Err(PyValueError::new_err("an object is missing from the plan"));
            }
            keys.push(first.clone());
            index.insert(first.clone(), children.len());
            children.push(leaf);
            return Ok(());
        }
    };
    if rest.is_empty() {
        return Err(PyValueError::new_err("a path appears twice"));
    }
    insert(&mut children[at], rest, leaf)
}

#[pymethods]
impl Plan {
    /// ``size``: the record's number of fields; ``fields``: every field of the record and of
    /// its objects, in the record's order (an object before its fields), as (path, Python type
    /// name, column type code, staging position): an object is ``"object"``, None and its
    /// number of fields, a null ``"NoneType"``, None and -1. Then the system columns' positions.
    #[new]
    #[pyo3(signature = (size, fields, width, received_at, sequence, batched_at, table_version, extracted_at))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        size: usize,
        fields: Vec<(Vec<String>, String, Option<String>, i64)>,
        width: usize,
        received_at: usize,
        sequence: usize,
        batched_at: Option<usize>,
        table_version: Option<usize>,
        extracted_at: Option<usize>,
    ) -> PyResult<Self> {
        let object = |size: usize| Node::Object {
            size,
            keys: Vec::new(),
            index: HashMap::new(),
            children: Vec::new(),
        };
        let mut root = object(size);
        let mut slots = vec![Slot::Empty; width];
        let mut place = |at: usize, slot: Slot| -> PyResult<()> {
            match slots.get_mut(at) {
                Some(s @ Slot::Empty) => {
                    *s = slot;
                    Ok(())
                }
                _ => Err(PyValueError::new_err("two fields in one staging position")),
            }
        };
        let mut cells = 0;
        for (path, python_type, kind, at) in fields {
            let node = match (python_type.as_str(), kind) {
                ("object", None) => object(
                    usize::try_from(at).map_err(|_| PyValueError::new_err("an object's size"))?,
                ),
                (_, None) => Node::Null,
                (_, Some(kind)) => {
                    let kind = leaf_kind(&python_type, &kind)
                        .ok_or_else(|| PyValueError::new_err("a leaf type this cannot render"))?;
                    let at = usize::try_from(at)
                        .map_err(|_| PyValueError::new_err("a typed leaf without a position"))?;
                    place(at, Slot::Cell(cells))?;
                    cells += 1;
                    Node::Leaf {
                        kind,
                        cell: cells - 1,
                    }
                }
            };
            insert(&mut root, &path, node)?;
        }
        place(received_at, Slot::ReceivedAt)?;
        place(sequence, Slot::Sequence)?;
        for (at, slot) in [
            (batched_at, Slot::BatchedAt),
            (table_version, Slot::TableVersion),
            (extracted_at, Slot::ExtractedAt),
        ] {
            if let Some(at) = at {
                place(at, slot)?;
            }
        }
        check_sizes(&root)?;
        Ok(Plan { root, cells, slots })
    }
}

fn check_sizes(node: &Node) -> PyResult<()> {
    if let Node::Object { size, children, .. } = node {
        if *size != children.len() || *size > MAX_OBJECT {
            return Err(PyValueError::new_err("an object's size is not its fields"));
        }
        children.iter().try_for_each(check_sizes)?;
    }
    Ok(())
}

fn mismatch<E: de::Error>() -> E {
    E::custom("not this plan") // the parse stops here: the line goes to the next plan, or Python
}

/// What a line's envelope holds besides ``data`` (matched into the cells as it is parsed).
struct Envelope<'a> {
    sequence: i64,
    extracted: Option<&'a str>, // a non-empty ``time_extracted`` ("" and null are falsy)
}

/// Parses a record line as serde_json does (its grammar, numbers and UTF-8 checks) while
/// matching its ``data`` against one plan, without building the values: the first field that
/// differs from the plan ends the parse.
struct LineSeed<'p, 'c, 'a> {
    plan: &'p Plan,
    cells: &'c mut [Option<Cell<'a>>],
}

impl<'de> DeserializeSeed<'de> for LineSeed<'_, '_, 'de> {
    type Value = Envelope<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Envelope<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for LineSeed<'_, '_, 'de> {
    type Value = Envelope<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a record line")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope<'de>, A::Error> {
        let (mut action, mut sequence, mut data, mut extracted) = (false, None, false, None);
        while let Some(key) = map.next_key::<&'de str>()? {
            // Each field once (orjson keeps a repeated key's last value: Python's to read).
            match key {
                "action" if !action => {
                    if map.next_value::<&'de str>()? != "upsert" {
                        return Err(mismatch()); // activate_version and the like: Python's
                    }
                    action = true;
                }
                "sequence" if sequence.is_none() => sequence = Some(map.next_value::<i64>()?),
                "data" if !data => {
                    map.next_value_seed(ObjectSeed {
                        node: &self.plan.root,
                        cells: &mut *self.cells,
                    })?;
                    data = true;
                }
                "time_extracted" if extracted.is_none() => {
                    extracted = Some(map.next_value::<Option<&'de str>>()?);
                }
                _ => return Err(mismatch()), // a header line, another field
            }
        }
        if !data {
            return Err(mismatch());
        }
        Ok(Envelope {
            sequence: sequence.unwrap_or(0),
            extracted: extracted.flatten().filter(|s| !s.is_empty()),
        })
    }
}

/// An object that must have exactly the fields of ``node``, each of its kind.
struct ObjectSeed<'p, 'c, 'a> {
    node: &'p Node,
    cells: &'c mut [Option<Cell<'a>>],
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of the plan's shape")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Node::Object {
            size,
            keys,
            index,
            children,
        } = self.node
        else {
            return Err(mismatch());
        };
        let mut seen = [0u64; MAX_OBJECT / 64];
        let mut count = 0;
        while let Some(key) = map.next_key::<&'de str>()? {
            // Records of one shape mostly list their fields in one order: try that first.
            let at = if keys.get(count).is_some_and(|k| k == key) {
                count
            } else {
                *index.get(key).ok_or_else(mismatch)?
            };
            let (word, bit) = (at / 64, 1u64 << (at % 64));
            if seen[word] & bit != 0 {
                return Err(mismatch()); // a key twice: orjson keeps the last value
            }
            seen[word] |= bit;
            count += 1;
            map.next_value_seed(NodeSeed {
                node: &children[at],
                cells: &mut *self.cells,
            })?;
        }
        if count != *size {
            return Err(mismatch());
        }
        Ok(())
    }
}

struct NodeSeed<'p, 'c, 'a> {
    node: &'p Node,
    cells: &'c mut [Option<Cell<'a>>],
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.node {
            Node::Object { .. } => ObjectSeed {
                node: self.node,
                cells: self.cells,
            }
            .deserialize(d),
            Node::Null => <()>::deserialize(d), // null, and nothing else
            Node::Leaf { kind, cell } => {
                self.cells[*cell] = Some(d.deserialize_any(LeafVisitor(*kind))?);
                Ok(())
            }
        }
    }
}

/// A scalar of the leaf's kind, within the ranges the Python plan checks.
struct LeafVisitor(LeafKind);

impl<'de> Visitor<'de> for LeafVisitor {
    type Value = Cell<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a scalar of the plan's kind")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Cell<'de>, E> {
        match self.0 {
            LeafKind::Text => Ok(Cell::Str(v)),
            LeafKind::Timestamp if is_datetime(v.as_bytes()) => Ok(Cell::Str(v)),
            _ => Err(mismatch()),
        }
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Cell<'de>, E> {
        match self.0 {
            LeafKind::BigInt => Ok(Cell::Int(v)),
            LeafKind::IntDouble => Ok(Cell::IntDouble(v)),
            _ => Err(mismatch()),
        }
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Cell<'de>, E> {
        // Beyond int64: a Python int the plans refuse.
        self.visit_i64(i64::try_from(v).map_err(|_| mismatch::<E>())?)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Cell<'de>, E> {
        match self.0 {
            // A float this large might be an overflowed integer (orjson's reading of one); a
            // negative zero might be the integer literal -0 (serde_json keeps its sign, orjson
            // reads the int 0).
            LeafKind::Double
                if -FLOAT_LIMIT < v && v < FLOAT_LIMIT && !(v == 0.0 && v.is_sign_negative()) =>
            {
                Ok(Cell::Double(v))
            }
            _ => Err(mismatch()),
        }
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Cell<'de>, E> {
        match self.0 {
            LeafKind::Boolean => Ok(Cell::Bool(v)),
            _ => Err(mismatch()),
        }
    }
}

fn digits(bytes: &[u8], from: usize, to: usize) -> Option<u32> {
    let part = bytes.get(from..to)?;
    part.iter().try_fold(0u32, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
    })
}

/// A subset of what Python 3.11's ``datetime.fromisoformat`` takes, checked as it checks:
/// ``YYYY-MM-DD``, optionally ``[T ]HH:MM:SS``, ``.f`` to ``.ffffff``, ``Z`` or ``±HH:MM``.
fn is_datetime(s: &[u8]) -> bool {
    let date = || -> Option<()> {
        let (year, month, day) = (digits(s, 0, 4)?, digits(s, 5, 7)?, digits(s, 8, 10)?);
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
    if s.len() < 10 || date().is_none() {
        return false;
    }
    if s.len() == 10 {
        return true;
    }
    let time = || -> Option<()> {
        (matches!(s[10], b'T' | b' ') && s.get(13) == Some(&b':') && s.get(16) == Some(&b':'))
            .then_some(())?;
        let (hour, minute, second) = (digits(s, 11, 13)?, digits(s, 14, 16)?, digits(s, 17, 19)?);
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
                let (h, m) = (digits(s, at + 1, at + 3)?, digits(s, at + 4, at + 6)?);
                (h < 24 && m < 60).then_some(())
            }
            _ => None,
        }
    };
    time().is_some()
}

/// ``repr(value)`` of a Python float: the shortest digits that read back (as ryu's), laid out
/// as Python lays them out (fixed from 1e-4 up to 1e16, else ``d.ddde+XX``).
fn push_float(out: &mut Vec<u8>, value: f64) {
    if value == 0.0 {
        out.extend_from_slice(if value.is_sign_negative() {
            b"-0.0"
        } else {
            b"0.0"
        });
        return;
    }
    let mut buffer = ryu::Buffer::new();
    let text = buffer.format_finite(value).as_bytes();
    let (negative, text) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    let (mantissa, exponent) = match text.iter().position(|&c| c == b'e') {
        Some(e) => (
            &text[..e],
            std::str::from_utf8(&text[e + 1..]).map_or(0, |x| x.parse().unwrap_or(0)),
        ),
        None => (text, 0i32),
    };
    let point = mantissa
        .iter()
        .position(|&c| c == b'.')
        .unwrap_or(mantissa.len());
    let mut digits: Vec<u8> = mantissa.iter().copied().filter(|&c| c != b'.').collect();
    // value = 0.DIGITS x 10^decpt
    let mut decpt = point as i32 + exponent;
    let leading = digits.iter().take_while(|&&c| c == b'0').count();
    digits.drain(..leading);
    decpt -= leading as i32;
    while digits.len() > 1 && digits.last() == Some(&b'0') {
        digits.pop();
    }
    if negative {
        out.push(b'-');
    }
    let count = digits.len() as i32;
    if -4 < decpt && decpt <= 16 {
        if decpt <= 0 {
            out.extend_from_slice(b"0.");
            out.extend(std::iter::repeat_n(b'0', (-decpt) as usize));
            out.extend_from_slice(&digits);
        } else if decpt >= count {
            out.extend_from_slice(&digits);
            out.extend(std::iter::repeat_n(b'0', (decpt - count) as usize));
            out.extend_from_slice(b".0");
        } else {
            out.extend_from_slice(&digits[..decpt as usize]);
            out.push(b'.');
            out.extend_from_slice(&digits[decpt as usize..]);
        }
        return;
    }
    out.push(digits[0]);
    if digits.len() > 1 {
        out.push(b'.');
        out.extend_from_slice(&digits[1..]);
    }
    let power = decpt - 1;
    out.extend_from_slice(if power < 0 { b"e-" } else { b"e+" });
    if power.abs() < 10 {
        out.push(b'0');
    }
    out.extend_from_slice(itoa::Buffer::new().format(power.abs()).as_bytes());
}

fn push_quoted(out: &mut Vec<u8>, text: &str) {
    // A plain line's strings hold no quote: nothing to double (Postgres ``PLAIN_INLINE``).
    out.push(b'"');
    out.extend_from_slice(text.as_bytes());
    out.push(b'"');
}

struct Context<'a> {
    received_at: &'a str,
    table_version: &'a str,
    batched_at: &'a str,
}

fn render(
    out: &mut Vec<u8>,
    plan: &Plan,
    cells: &[Option<Cell>],
    sequence: i64,
    extracted: Option<&str>,
    context: &Context,
) {
    for (n, slot) in plan.slots.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        match slot {
            Slot::Empty => {}
            Slot::Cell(cell) => match cells[*cell] {
                Some(Cell::Str(s)) => push_quoted(out, s),
                Some(Cell::Int(i)) => {
                    out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes())
                }
                Some(Cell::IntDouble(i)) => push_float(out, i as f64), // float(int): to nearest, as Python
                Some(Cell::Double(f)) => push_float(out, f),
                Some(Cell::Bool(b)) => out.extend_from_slice(if b { b"true" } else { b"false" }),
                None => {}
            },
            Slot::ReceivedAt => out.extend_from_slice(context.received_at.as_bytes()),
            Slot::Sequence => {
                out.extend_from_slice(itoa::Buffer::new().format(sequence).as_bytes())
            }
            Slot::BatchedAt => out.extend_from_slice(context.batched_at.as_bytes()),
            Slot::TableVersion => out.extend_from_slice(context.table_version.as_bytes()),
            Slot::ExtractedAt => push_quoted(out, extracted.unwrap_or_default()),
        }
    }
}

/// Parse ``line`` against ``plans`` in ``order`` (most recently used first, as
/// ``PlanBuilder._planned`` tries them): the position in ``order`` of the one that took it,
/// and the line's envelope.
fn take<'a>(
    plans: &[&Plan],
    order: &[usize],
    line: &'a [u8],
    cells: &mut Vec<Option<Cell<'a>>>,
) -> Option<(usize, Envelope<'a>)> {
    for (n, &at) in order.iter().enumerate() {
        let plan = &plans[at];
        cells.clear();
        cells.resize(plan.cells, None);
        let mut parser = serde_json::Deserializer::from_slice(line);
        let parsed = LineSeed { plan, cells }.deserialize(&mut parser);
        if let (Ok(envelope), Ok(())) = (parsed, parser.end()) {
            return Some((n, envelope));
        }
    }
    None
}

/// What ``stage`` staged: the lines (each ending in a newline), their sizes and widths as
/// native ``array("I")`` bytes, how many, where the first line not taken starts, and each
/// plan list's new order.
struct Staged {
    out: Vec<u8>,
    sizes: Vec<u8>,
    widths: Vec<u8>,
    taken: usize,
    stop: usize,
    order: Vec<usize>,
    extracted_order: Vec<usize>,
}

#[allow(clippy::too_many_arguments)]
fn stage_lines(
    text: &[u8],
    start: usize,
    end: usize,
    limit: usize,
    plans: &[&Plan],
    extracted_plans: &[&Plan],
    context: &Context,
) -> Staged {
    let end = end.min(text.len());
    let mut order: Vec<usize> = (0..plans.len()).collect();
    let mut extracted_order: Vec<usize> = (0..extracted_plans.len()).collect();
    let mut out = Vec::with_capacity(end.saturating_sub(start).min(256 << 10));
    let (mut sizes, mut widths) = (Vec::<u8>::new(), Vec::<u8>::new());
    let mut cells = Vec::new();
    let mut taken = 0;
    let time_extracted = memmem::Finder::new(b"\"time_extracted\"");
    let mut at = start;
    while taken < limit {
        let Some(length) = text
            .get(at..end)
            .and_then(|rest| memchr::memchr(b'\n', rest))
        else {
            break;
        };
        let line = &text[at..at + length];
        if line.is_empty() {
            at += 1;
            continue;
        }
        if memchr::memchr(b'\\', line).is_some() {
            break; // not plain
        }
        // Which plans: those of records with a time_extracted, or those without. A line that
        // names one is most likely to have one; the envelope parsed says for sure.
        let groups: &[bool] = if time_extracted.find(line).is_some() {
            &[true, false]
        } else {
            &[false]
        };
        let mut found = None;
        for extracted in groups {
            let (group, group_order) = if *extracted {
                (&extracted_plans, &mut extracted_order)
            } else {
                (&plans, &mut order)
            };
            if let Some((n, envelope)) = take(group, group_order, line, &mut cells) {
                if envelope.extracted.is_some() == *extracted {
                    group_order[..=n].rotate_right(1); // as ``_planned`` keeps its plans
                    found = Some((&group[group_order[0]], envelope));
                }
                break; // parsed: this is its group, or no plan of the other takes it either
            }
        }
        let Some((
            plan,
            Envelope {
                sequence,
                extracted,
            },
        )) = found
        else {
            break;
        };
        let before = out.len();
        render(&mut out, plan, &cells, sequence, extracted, context);
        let Ok(size) = u32::try_from(out.len() - before) else {
            out.truncate(before); // a staged line over 4 GiB: Python's to refuse
            break;
        };
        out.push(b'\n');
        sizes.extend_from_slice(&size.to_ne_bytes());
        widths.extend_from_slice(&(plan.slots.len() as u32).to_ne_bytes());
        taken += 1;
        at += length + 1;
    }
    Staged {
        out,
        sizes,
        widths,
        taken,
        stop: at,
        order,
        extracted_order,
    }
}

/// Stage the lines of ``text[start:end]`` (each ending in a newline; blank ones skipped), at
/// most ``limit``, for as long as a plan takes each: ``plans`` for records without a
/// ``time_extracted``, ``extracted_plans`` for those with one (each most recently used first;
/// ``None``: Python's). Returns (the staged lines, each ending in a newline; their sizes and
/// widths as native ``array("I")`` bytes; how many lines were taken; where the first line not
/// taken starts; each list's new order, as indices into it). Runs without the GIL.
#[pyfunction]
#[pyo3(signature = (text, start, end, limit, plans, extracted_plans, received_at, table_version, batched_at))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn stage<'py>(
    py: Python<'py>,
    text: &[u8],
    start: usize,
    end: usize,
    limit: usize,
    plans: Option<Vec<PyRef<'py, Plan>>>,
    extracted_plans: Option<Vec<PyRef<'py, Plan>>>,
    received_at: &str,
    table_version: &str,
    batched_at: &str,
) -> PyResult<(
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    usize,
    usize,
    Vec<usize>,
    Vec<usize>,
)> {
    let context = Context {
        received_at,
        table_version,
        batched_at,
    };
    let plans = plans.unwrap_or_default();
    let extracted_plans = extracted_plans.unwrap_or_default();
    let plans: Vec<&Plan> = plans.iter().map(|p| &**p).collect();
    let extracted_plans: Vec<&Plan> = extracted_plans.iter().map(|p| &**p).collect();
    // The merge thread (its statements' results) and other loads run meanwhile.
    let staged = py
        .allow_threads(|| stage_lines(text, start, end, limit, &plans, &extracted_plans, &context));
    Ok((
        PyBytes::new(py, &staged.out),
        PyBytes::new(py, &staged.sizes),
        PyBytes::new(py, &staged.widths),
        staged.taken,
        staged.stop,
        staged.order,
        staged.extracted_order,
    ))
}

/// ``repr(value)``, as ``stage`` writes a float (for the tests).
#[pyfunction]
fn float_repr(value: f64) -> String {
    let mut out = Vec::new();
    push_float(&mut out, value);
    String::from_utf8(out).unwrap_or_default()
}

/// Whether ``stage`` takes ``text`` as a date-time (for the tests).
#[pyfunction]
fn takes_datetime(text: &str) -> bool {
    is_datetime(text.as_bytes())
}

#[pymodule]
fn skein_loader_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Plan>()?;
    m.add_function(wrap_pyfunction!(stage, m)?)?;
    m.add_function(wrap_pyfunction!(float_repr, m)?)?;
    m.add_function(wrap_pyfunction!(takes_datetime, m)?)?;
    Ok(())
}

//! `skein_loader_native`: the Postgres loader's compiled record plans (decision 4), run natively
//! over runs of a batch's record lines (decision 12).
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
//! forms). Its staged line is the Python plan's, byte for byte: `tests/unit/test_loader_native.py`
//! holds the two to that on generated records.

use std::collections::HashMap;
use std::fmt;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A parsed JSON value whose strings borrow from the line (a plain line has no escapes).
enum Json<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Wide, // an integer beyond int64 (orjson: a Python int the plans do not take)
    Float(f64),
    Str(&'a str),
    Array,
    Object(Fields<'a>),
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json<'de>, E> {
        Ok(Json::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json<'de>, E> {
        Ok(i64::try_from(v).map_or(Json::Wide, Json::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json<'de>, E> {
        Ok(Json::Float(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::Str(v))
    }
    fn visit_str<E: de::Error>(self, _v: &str) -> Result<Json<'de>, E> {
        Err(E::custom("an escaped string")) // never in a plain line; Python's, if it were
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Json::Array) // no plan takes an array
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(key) = map.next_key::<&'de str>()? {
            fields.push((key, map.next_value::<Json<'de>>()?));
        }
        Ok(Json::Object(fields))
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

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
    /// ``objects``: (path, size) of every object, the record itself (path ``()``) first and
    /// parents before children; ``leaves``: (path, Python type name, column type code or None
    /// for a null, staging position or -1); the staging positions of the system columns.
    #[new]
    #[pyo3(signature = (objects, leaves, width, received_at, sequence, batched_at, table_version, extracted_at))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        objects: Vec<(Vec<String>, usize)>,
        leaves: Vec<(Vec<String>, String, Option<String>, i64)>,
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
        let mut objects = objects.into_iter();
        let (root_path, root_size) = objects
            .next()
            .ok_or_else(|| PyValueError::new_err("no root object"))?;
        if !root_path.is_empty() {
            return Err(PyValueError::new_err("the first object must be the record"));
        }
        let mut root = object(root_size);
        for (path, size) in objects {
            insert(&mut root, &path, object(size))?;
        }
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
        for (path, python_type, kind, at) in leaves {
            let node = match kind {
                None => Node::Null,
                Some(kind) => {
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

/// Does ``fields`` have exactly the shape of ``node``? Fills ``cells`` as it goes.
fn matches<'a>(
    node: &Node,
    fields: &[(&'a str, Json<'a>)],
    cells: &mut [Option<Cell<'a>>],
) -> bool {
    let Node::Object {
        size,
        keys,
        index,
        children,
    } = node
    else {
        return false;
    };
    if fields.len() != *size {
        return false;
    }
    let mut seen = [0u64; MAX_OBJECT / 64];
    for (n, (key, value)) in fields.iter().enumerate() {
        // Records of one shape mostly list their fields in one order: try that first.
        let at = if keys.get(n).is_some_and(|k| k == key) {
            n
        } else {
            match index.get(*key) {
                Some(&at) => at,
                None => return false,
            }
        };
        let (word, bit) = (at / 64, 1u64 << (at % 64));
        if seen[word] & bit != 0 {
            return false; // a key twice: orjson keeps the last value; leave that to Python
        }
        seen[word] |= bit;
        let ok = match (&children[at], value) {
            (Node::Object { .. }, Json::Object(inner)) => matches(&children[at], inner, cells),
            (Node::Null, Json::Null) => true,
            (Node::Leaf { kind, cell }, value) => match (kind, value) {
                (LeafKind::Text, Json::Str(s)) => {
                    cells[*cell] = Some(Cell::Str(s));
                    true
                }
                (LeafKind::Timestamp, Json::Str(s)) if is_datetime(s.as_bytes()) => {
                    cells[*cell] = Some(Cell::Str(s));
                    true
                }
                (LeafKind::BigInt, Json::Int(i)) => {
                    cells[*cell] = Some(Cell::Int(*i));
                    true
                }
                (LeafKind::IntDouble, Json::Int(i)) => {
                    cells[*cell] = Some(Cell::IntDouble(*i));
                    true
                }
                (LeafKind::Double, Json::Float(f)) if -FLOAT_LIMIT < *f && *f < FLOAT_LIMIT => {
                    cells[*cell] = Some(Cell::Double(*f));
                    true
                }
                (LeafKind::Boolean, Json::Bool(b)) => {
                    cells[*cell] = Some(Cell::Bool(*b));
                    true
                }
                _ => false,
            },
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// An object's fields, in the line's order (duplicates kept: a plan refuses them).
type Fields<'a> = Vec<(&'a str, Json<'a>)>;

/// A record line's envelope: (sequence, data, time_extracted), or None when Python should read it.
fn envelope<'a>(line: &'a [u8]) -> Option<(i64, Fields<'a>, Option<&'a str>)> {
    let Ok(Json::Object(fields)) = serde_json::from_slice::<Json<'a>>(line) else {
        return None;
    };
    let (mut action, mut sequence, mut data, mut extracted) = (false, false, None, false);
    let (mut seq, mut time_extracted) = (0i64, None);
    for (key, value) in fields {
        let fresh = match (key, value) {
            ("action", Json::Str("upsert")) => !std::mem::replace(&mut action, true),
            ("sequence", Json::Int(i)) => {
                seq = i;
                !std::mem::replace(&mut sequence, true)
            }
            ("data", Json::Object(inner)) => data.replace(inner).is_none(),
            ("time_extracted", Json::Null) => !std::mem::replace(&mut extracted, true),
            ("time_extracted", Json::Str(s)) => {
                time_extracted = (!s.is_empty()).then_some(s); // "" is falsy: no time
                !std::mem::replace(&mut extracted, true)
            }
            _ => false, // another action, a header line, an odd type: Python's
        };
        if !fresh {
            return None;
        }
    }
    Some((seq, data?, time_extracted))
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

/// Try ``plans`` in ``order`` (most recently used first, as ``PlanBuilder._planned`` does);
/// the index into ``plans`` of the one that took the record, moved to the front.
fn take<'a>(
    plans: &[PyRef<'_, Plan>],
    order: &mut [usize],
    data: &[(&'a str, Json<'a>)],
    cells: &mut Vec<Option<Cell<'a>>>,
) -> Option<usize> {
    for n in 0..order.len() {
        let plan = &plans[order[n]];
        cells.clear();
        cells.resize(plan.cells, None);
        if matches(&plan.root, data, cells) {
            order[..=n].rotate_right(1);
            return Some(order[0]);
        }
    }
    None
}

/// Stage ``lines[start:]`` for as long as a plan takes each line: ``plans`` for records
/// without a ``time_extracted``, ``extracted_plans`` for those with one (each most recently
/// used first; ``None``: Python's). Returns (the staged lines, each ending in a newline;
/// their sizes and widths as native ``array("I")`` bytes; how many lines were taken; each
/// list's new order, as indices into it).
#[pyfunction]
#[pyo3(signature = (lines, start, plans, extracted_plans, received_at, table_version, batched_at, limit))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn stage<'py>(
    py: Python<'py>,
    lines: &Bound<'py, PyList>,
    start: usize,
    plans: Option<Vec<PyRef<'py, Plan>>>,
    extracted_plans: Option<Vec<PyRef<'py, Plan>>>,
    received_at: &str,
    table_version: &str,
    batched_at: &str,
    limit: usize,
) -> PyResult<(
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
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
    let mut order: Vec<usize> = (0..plans.len()).collect();
    let mut extracted_order: Vec<usize> = (0..extracted_plans.len()).collect();
    let mut out = Vec::with_capacity(64 * 1024);
    let (mut sizes, mut widths) = (Vec::<u8>::new(), Vec::<u8>::new());
    // Held for the whole call: the cells borrow the lines' strings.
    let held: Vec<Bound<'py, PyBytes>> = lines
        .iter()
        .skip(start)
        .take(limit)
        .map(|item| item.downcast_into::<PyBytes>().map_err(PyErr::from))
        .collect::<PyResult<_>>()?;
    let mut cells = Vec::new();
    let mut taken = 0;
    for bytes in &held {
        let line = bytes.as_bytes();
        if line.contains(&b'\\') {
            break; // not plain
        }
        let Some((sequence, data, extracted)) = envelope(line) else {
            break;
        };
        let (group, group_order) = if extracted.is_some() {
            (&extracted_plans, &mut extracted_order)
        } else {
            (&plans, &mut order)
        };
        let Some(used) = take(group, group_order, &data, &mut cells) else {
            break;
        };
        let plan = &group[used];
        let before = out.len();
        render(&mut out, plan, &cells, sequence, extracted, &context);
        let size = u32::try_from(out.len() - before)
            .map_err(|_| PyValueError::new_err("a line over 4 GiB"))?;
        out.push(b'\n');
        sizes.extend_from_slice(&size.to_ne_bytes());
        widths.extend_from_slice(&(plan.slots.len() as u32).to_ne_bytes());
        taken += 1;
    }
    Ok((
        PyBytes::new(py, &out),
        PyBytes::new(py, &sizes),
        PyBytes::new(py, &widths),
        taken,
        order,
        extracted_order,
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

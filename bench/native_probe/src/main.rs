//! What the gate's and the loader's per-record work costs in Rust, on the bytes
//! bench/native_probe.py writes; it prints one "name microseconds" line per measurement.
//!
//!   native-probe gate-serde BODY ITERATIONS         the /batch path (serde_json, jsonschema)
//!   native-probe gate-sonic-parse BODY ITERATIONS   the body parsed by sonic-rs, nothing else
//!   native-probe gate-raw-envelope BODY ITERATIONS  the envelope, each record's data unparsed
//!   native-probe loader LINES REPEATS               record lines to CSV, per record
//! (one measurement a process: the allocator's state after one would skew the next)

use serde_json::value::RawValue;
use serde_json::Value;
use sonic_rs::{JsonContainerTrait, JsonValueTrait};
use std::time::Instant;

fn too_deep(v: &Value, limit: usize, depth: usize) -> bool {
    let deeper = |c: &Value| too_deep(c, limit, depth + 1);
    match v {
        Value::Object(m) => depth > limit || m.values().any(deeper),
        Value::Array(a) => depth > limit || a.iter().any(deeper),
        _ => false,
    }
}

/// The /batch path: parse, depth, envelope, each record validated and checked, each line
/// written as the gate writes it.
fn batch(body: &[u8], validator: &jsonschema::Validator) -> Result<Vec<Vec<u8>>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if too_deep(&v, 64, 1) {
        return Err("too deep".into());
    }
    let body = v.as_object().ok_or("not an object")?;
    let table = body.get("table_name").and_then(Value::as_str).ok_or("table_name")?;
    if table.is_empty() || table.starts_with("_sdc") {
        return Err("table_name".into());
    }
    let keys: Vec<&str> = match body.get("key_names") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let messages = body.get("messages").and_then(Value::as_array).ok_or("messages")?;
    let mut lines = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let m = m.as_object().ok_or_else(|| format!("Record {i} must be an object"))?;
        let sequence = m.get("sequence").and_then(Value::as_i64).filter(|s| *s >= 0);
        let sequence = sequence.ok_or_else(|| format!("Record {i}: sequence"))?;
        if m.get("action").and_then(Value::as_str) != Some("upsert") {
            return Err(format!("Record {i}: action"));
        }
        let data = m.get("data").ok_or_else(|| format!("Record {i}: data"))?;
        let fields = data.as_object().ok_or_else(|| format!("Record {i}: data"))?;
        if !validator.is_valid(data) {
            return Err(format!("Record {i} did not conform to schema"));
        }
        for k in &keys {
            match fields.get(*k) {
                None | Some(Value::Null) => return Err(format!("Record is missing key {k}")),
                Some(Value::String(s)) if s.len() > 1024 => return Err("key too long".into()),
                _ => {}
            }
        }
        if fields.keys().any(|k| k.starts_with("_sdc")) {
            return Err(format!("Record {i}: reserved field"));
        }
        let mut line = Vec::with_capacity(512);
        line.extend_from_slice(b"{\"action\":\"upsert\",\"sequence\":");
        line.extend_from_slice(itoa::Buffer::new().format(sequence).as_bytes());
        line.extend_from_slice(b",\"data\":");
        serde_json::to_writer(&mut line, data).map_err(|e| e.to_string())?;
        line.push(b'}');
        lines.push(line);
    }
    Ok(lines)
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Envelope<'a> {
    table_name: &'a str,
    #[serde(borrow)]
    messages: Vec<Message<'a>>,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Message<'a> {
    action: &'a str,
    sequence: i64,
    #[serde(borrow)]
    data: &'a RawValue,
}

fn per_call(name: &str, iterations: u32, unit: f64, mut work: impl FnMut() -> usize) {
    let mut seen = 0;
    for _ in 0..iterations / 10 + 1 {
        seen += work(); // warm-up
    }
    let began = Instant::now();
    for _ in 0..iterations {
        seen += work();
    }
    let micros = began.elapsed().as_secs_f64() * 1e6 / f64::from(iterations) / unit;
    assert!(seen > 0);
    println!("{name} {micros:.3}");
}

fn render(out: &mut Vec<u8>, value: &sonic_rs::Value, first: &mut bool) {
    if let Some(fields) = value.as_object() {
        for (_, v) in fields.iter() {
            render(out, v, first); // an object's fields are the parent's columns (a__b)
        }
        return;
    }
    if !std::mem::take(first) {
        out.push(b',');
    }
    if let Some(i) = value.as_i64() {
        out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
    } else if let Some(f) = value.as_f64() {
        out.extend_from_slice(ryu::Buffer::new().format(f).as_bytes());
    } else if let Some(b) = value.as_bool() {
        out.push(if b { b't' } else { b'f' });
    } else if let Some(s) = value.as_str() {
        out.push(b'"');
        for &c in s.as_bytes() {
            if c == b'"' {
                out.push(b'"');
            }
            out.push(c);
        }
        out.push(b'"');
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (what, path, count) = match args.as_slice() {
        [_, what, path, count] => (what.as_str(), path, count.parse::<u32>().expect("a count")),
        _ => panic!("usage: native-probe MEASUREMENT FILE COUNT"),
    };
    let bytes = std::fs::read(path).expect("the input file");
    match what {
        "gate-serde" => {
            let parsed: Value = serde_json::from_slice(&bytes).expect("JSON");
            let validator = jsonschema::validator_for(&parsed["schema"]).expect("a schema");
            per_call(what, count, 1.0, || batch(&bytes, &validator).expect("a valid body").len());
        }
        "gate-sonic-parse" => per_call(what, count, 1.0, || {
            let v: sonic_rs::Value = sonic_rs::from_slice(&bytes).expect("JSON");
            v.get("messages").and_then(|m| m.as_array().map(|a| a.len())).unwrap_or(0)
        }),
        "gate-raw-envelope" => per_call(what, count, 1.0, || {
            let e: Envelope = serde_json::from_slice(&bytes).expect("JSON");
            e.messages.len()
        }),
        "loader" => {
            let lines: Vec<&[u8]> = bytes.split(|&c| c == b'\n').filter(|l| !l.is_empty()).collect();
            let mut out = Vec::with_capacity(bytes.len());
            per_call(what, count, lines.len() as f64, || {
                out.clear();
                for line in &lines {
                    let v: sonic_rs::Value = sonic_rs::from_slice(line).expect("JSON");
                    let sequence = v.get("sequence").and_then(|s| s.as_i64()).unwrap_or(0);
                    let mut first = true;
                    if let Some(data) = v.get("data") {
                        render(&mut out, data, &mut first);
                    }
                    out.extend_from_slice(b",\"2026-11-26T10:00:00.000000Z\",");
                    out.extend_from_slice(itoa::Buffer::new().format(sequence).as_bytes());
                    out.extend_from_slice(b",\"2026-11-26T12:00:00.123456+00:00\"\n");
                }
                out.len()
            });
        }
        _ => panic!("gate-serde, gate-sonic-parse, gate-raw-envelope or loader"),
    }
}

//! Fuzzes the configuration file reader: YAML text → marked tree → keys and values, then every
//! value through the parsers the daemon checks it with (ports, durations, URLs, `k=v` lists),
//! and `attributes.select` matching with the file's own names.
//!
//! Besides "never panics": errors name a line inside the text, and a file that parses once
//! parses the same again (the reader keeps no state).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/config"]
mod config {
    pub mod file;
    pub mod select;
    pub mod values;
    pub mod yaml;
}

use config::{file, select, values};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = file::parse(text);
    // YAML breaks lines at CR as well as LF (and the end of the text may hold one more).
    let lines = text.bytes().filter(|b| matches!(b, b'\n' | b'\r')).count() + 2;
    match &parsed {
        Err(e) => assert!(e.line <= lines, "line {} of {lines}: {e:?}", e.line),
        Ok(f) => {
            for v in &f.vars {
                assert!(v.at.line >= 1 && v.at.line <= lines);
                let _ = values::PortSet::parse("v", &v.value);
                let _ = values::parse_duration("v", &v.value);
                let _ = values::parse_url("v", &v.value);
                let _ = values::parse_headers("v", &v.value);
            }
            for e in f
                .instrument
                .iter()
                .flatten()
                .chain(f.exclude.iter().flatten())
            {
                if let Some((p, _)) = &e.open_ports {
                    let _ = values::PortSet::parse("open_ports", p);
                }
            }
            let rules = f
                .select
                .iter()
                .map(|s| select::SelectRule {
                    metric: s.metric.clone(),
                    include: s.include.clone(),
                    exclude: s.exclude.clone(),
                })
                .collect();
            let sel = select::AttributeSelect { rules };
            for s in &f.select {
                for a in s.include.iter().flatten().chain(&s.exclude) {
                    let _ = sel.allowed(&s.metric, "_seconds", a, true);
                    let _ = sel.mentions(a);
                }
            }
            for b in &f.buckets {
                assert!(b.bounds.windows(2).all(|w| w[0] < w[1]));
            }
        }
    }
    assert_eq!(parsed, file::parse(text));
});

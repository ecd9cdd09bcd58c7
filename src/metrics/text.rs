//! The exposition writer: Prometheus text 0.0.4 and OpenMetrics 1.0.0 lines appended straight
//! to a byte buffer.
//!
//! It replaces prometheus-client's encoder on the scrape path (`/metrics` at 1,000 mailboxes is
//! ~43,000 series; that encoder writes each piece through `dyn fmt::Write` and cost 10-14 ms,
//! docs/benchmarks.md). The output is byte-identical to prometheus-client 0.26's, which stays
//! compiled as the reference (`super::reference`) and is compared with this writer by the tests
//! in `super`. What that takes, from prometheus-client's `encoding/text.rs` (OpenMetrics) and
//! `encoding/prometheus_text.rs` (0.0.4):
//!
//! - HELP/TYPE: 0.0.4 names the family with its sample suffix (`_total` for counters, `_info`
//!   for info metrics, whose TYPE is `gauge`) and escapes `\` and newlines in the help text;
//!   OpenMetrics names it bare, with TYPE `counter`/`gauge`/`info`/`histogram`, help verbatim.
//!   No UNIT lines (no family has a unit), no `_created`.
//! - Label values escape `\`, `"` and newline (both formats); keys are written as given.
//! - Values: integers with `itoa`; floats with `dtoa` (shortest round-trip, `1.0` not `1`).
//!   Non-finite floats are `NaN`/`+Inf`/`-Inf` in 0.0.4 but dtoa's `NaN`/`inf`/`-inf` in
//!   OpenMetrics (that is what prometheus-client writes).
//! - Histograms: 0.0.4 writes the buckets first (family labels, then `le` formatted like Go's
//!   `strconv.FormatFloat(v, 'g', -1, 64)`), then `_sum`, `_count`; OpenMetrics writes `_sum`,
//!   `_count`, then the buckets with `le` (dtoa, `+Inf`) *before* the family labels.

use std::fmt::Write as _;

use crate::state::Histogram;

/// What a family is; decides the sample-name suffix and the TYPE word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Gauge,
    /// Samples are named `<name>_total`.
    Counter,
    /// Samples are named `<name>_info`, value 1.
    Info,
    Histogram,
}

impl Kind {
    fn suffix(self) -> &'static str {
        match self {
            Kind::Counter => "_total",
            Kind::Info => "_info",
            Kind::Gauge | Kind::Histogram => "",
        }
    }
}

/// The labels of one series, borrowed from the configuration and the state being encoded.
///
/// A fixed, inline array: a scrape writes ~43,000 series and an owned list per series made
/// allocation the bulk of the encode time. `pre` holds labels already rendered (`k="v",...`,
/// escaped) that come first: a login's `mailbox` and `protocol`, rendered once per scrape
/// for its ~14 series.
#[derive(Clone, Copy, Debug)]
pub(super) struct Labels<'a> {
    pre: &'a [u8],
    kv: [(&'static str, &'a str); 4],
    n: usize,
}

impl<'a> Labels<'a> {
    pub(super) const NONE: Labels<'static> = Labels {
        pre: b"",
        kv: [("", ""); 4],
        n: 0,
    };

    pub(super) fn of<const N: usize>(pairs: [(&'static str, &'a str); N]) -> Labels<'a> {
        let mut l = Labels::NONE;
        for kv in pairs {
            l.push(kv);
        }
        l
    }

    /// Labels rendered beforehand by [`render_labels`].
    pub(super) fn rendered(pre: &'a [u8]) -> Labels<'a> {
        Labels {
            pre,
            ..Labels::NONE
        }
    }

    /// Add a label; a fifth is an invariant violation (no family has more than four).
    pub(super) fn push(&mut self, kv: (&'static str, &'a str)) {
        debug_assert!(self.n < self.kv.len(), "more than four labels");
        if let Some(slot) = self.kv.get_mut(self.n) {
            *slot = kv;
            self.n += 1;
        }
    }

    /// The pairs (not the pre-rendered part).
    pub(super) fn pairs(&self) -> &[(&'static str, &'a str)] {
        &self.kv[..self.n]
    }

    pub(super) fn pre(&self) -> &'a [u8] {
        self.pre
    }
}

/// Append `k="v",...` for `pairs` to `out` (what [`Labels::rendered`] takes).
pub(super) fn render_labels(out: &mut Vec<u8>, pairs: &[(&str, &str)]) {
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        label(out, k, v);
    }
}

/// The rendered `le` values of one bucket layout, kept for the whole scrape: every histogram
/// here shares `state::LATENCY_BUCKETS`, and Go-style float formatting goes through `fmt`.
#[derive(Debug, Default)]
pub(super) struct LeCache {
    /// Address and length of the bounds slice the values were rendered from.
    key: (usize, usize),
    values: Vec<String>,
}

impl LeCache {
    fn get(&mut self, bounds: &'static [f64], om: bool) -> &[String] {
        let key = (bounds.as_ptr() as usize, bounds.len());
        if self.key != key || self.values.len() != bounds.len() {
            self.key = key;
            self.values = bounds
                .iter()
                .map(|b| {
                    if om {
                        le_openmetrics(*b).to_string()
                    } else {
                        go_float(*b)
                    }
                })
                .collect();
        }
        &self.values
    }
}

/// Appends the lines of one family at a time to `out`.
pub(super) struct Writer<'w> {
    pub(super) out: &'w mut Vec<u8>,
    om: bool,
    name: &'static str,
    kind: Kind,
    /// `name` with the kind's suffix (`_total`, `_info`), as samples are named.
    series: &'w str,
    le: &'w mut LeCache,
    /// `name{labels,key="` of the series being written by [`Writer::gauge_last`].
    prefix: Vec<u8>,
}

impl<'w> Writer<'w> {
    /// A writer for family `name`; `series` is a buffer kept across families (the sample
    /// name is joined once per family, not written in two pieces per series).
    pub(super) fn new(
        out: &'w mut Vec<u8>,
        om: bool,
        name: &'static str,
        kind: Kind,
        series: &'w mut String,
        le: &'w mut LeCache,
    ) -> Writer<'w> {
        series.clear();
        series.push_str(name);
        series.push_str(kind.suffix());
        Writer {
            out,
            om,
            name,
            kind,
            series,
            le,
            prefix: Vec::new(),
        }
    }

    /// Start a run of gauges that share the labels `l` and differ in the value of one more
    /// label, `key` (a login's phases: 7-9 series each, over half of a large scrape). The
    /// shared part of the line is rendered once here and copied whole by
    /// [`Writer::gauge_last`].
    pub(super) fn begin_last(&mut self, l: &Labels<'_>, key: &str) {
        let mut prefix = std::mem::take(&mut self.prefix);
        prefix.clear();
        prefix.extend_from_slice(self.series.as_bytes());
        prefix.push(b'{');
        if l.n > 0 || !l.pre.is_empty() {
            labels(&mut prefix, l);
            prefix.push(b',');
        }
        prefix.extend_from_slice(key.as_bytes());
        prefix.extend_from_slice(b"=\"");
        self.prefix = prefix;
    }

    /// A gauge with the labels of the last [`Writer::begin_last`] and its `key` set to `value`:
    /// the same bytes as [`Writer::gauge`] with those labels and `(key, value)` pushed last.
    pub(super) fn gauge_last(&mut self, value: &str, v: f64) {
        let out = &mut *self.out;
        out.extend_from_slice(&self.prefix);
        label_value(out, value);
        out.extend_from_slice(b"\"} ");
        self.float(v);
        self.out.push(b'\n');
    }

    /// `# HELP` and `# TYPE` of the family.
    pub(super) fn header(&mut self, help: &str) {
        let (suffix, ty) = if self.om {
            let ty = match self.kind {
                Kind::Gauge => "gauge",
                Kind::Counter => "counter",
                Kind::Info => "info",
                Kind::Histogram => "histogram",
            };
            ("", ty)
        } else {
            let ty = match self.kind {
                Kind::Gauge | Kind::Info => "gauge",
                Kind::Counter => "counter",
                Kind::Histogram => "histogram",
            };
            (self.kind.suffix(), ty)
        };
        let out = &mut *self.out;
        out.extend_from_slice(b"# HELP ");
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(suffix.as_bytes());
        out.push(b' ');
        if !self.om && help.bytes().any(|b| b == b'\\' || b == b'\n') {
            for b in help.bytes() {
                match b {
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    _ => out.push(b),
                }
            }
        } else {
            out.extend_from_slice(help.as_bytes());
        }
        out.extend_from_slice(b"\n# TYPE ");
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(suffix.as_bytes());
        out.push(b' ');
        out.extend_from_slice(ty.as_bytes());
        out.push(b'\n');
    }

    pub(super) fn gauge(&mut self, l: &Labels<'_>, v: f64) {
        self.name_and_labels(l, "");
        self.out.push(b' ');
        self.float(v);
        self.out.push(b'\n');
    }

    pub(super) fn counter(&mut self, l: &Labels<'_>, v: u64) {
        self.name_and_labels(l, "");
        self.out.push(b' ');
        self.int(v);
        self.out.push(b'\n');
    }

    pub(super) fn info(&mut self, l: &Labels<'_>) {
        self.name_and_labels(l, "");
        self.out.extend_from_slice(b" 1\n");
    }

    /// One histogram series; `h.counts` are per bucket, written cumulatively.
    pub(super) fn histogram(&mut self, l: &Labels<'_>, h: &Histogram) {
        let in_buckets: u64 = h.counts.iter().sum();
        let above = h.count.saturating_sub(in_buckets);
        if self.om {
            self.sum_and_count(l, h);
        }
        let les = self.le.get(h.bounds, self.om);
        let mut cumulative = 0u64;
        let buckets = les
            .iter()
            .map(String::as_str)
            .zip(h.counts.iter().copied())
            .chain([("+Inf", above)]);
        for (le, n) in buckets {
            cumulative += n;
            let out = &mut *self.out;
            out.extend_from_slice(self.series.as_bytes());
            out.extend_from_slice(b"_bucket{");
            if self.om {
                out.extend_from_slice(b"le=\"");
                out.extend_from_slice(le.as_bytes());
                out.push(b'"');
                out.push(b',');
                labels(out, l);
            } else {
                labels(out, l);
                out.extend_from_slice(b",le=\"");
                out.extend_from_slice(le.as_bytes());
                out.push(b'"');
            }
            out.extend_from_slice(b"} ");
            out.extend_from_slice(itoa::Buffer::new().format(cumulative).as_bytes());
            out.push(b'\n');
        }
        if !self.om {
            self.sum_and_count(l, h);
        }
    }

    fn sum_and_count(&mut self, l: &Labels<'_>, h: &Histogram) {
        self.name_and_labels(l, "_sum");
        self.out.push(b' ');
        self.float(h.sum);
        self.out.push(b'\n');
        self.name_and_labels(l, "_count");
        self.out.push(b' ');
        self.int(h.count);
        self.out.push(b'\n');
    }

    fn name_and_labels(&mut self, l: &Labels<'_>, suffix: &str) {
        let out = &mut *self.out;
        out.extend_from_slice(self.series.as_bytes());
        if !suffix.is_empty() {
            out.extend_from_slice(suffix.as_bytes());
        }
        if l.n > 0 || !l.pre.is_empty() {
            out.push(b'{');
            labels(out, l);
            out.push(b'}');
        }
    }

    fn int_signed(&mut self, v: i64) {
        self.out
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }

    fn int(&mut self, v: u64) {
        self.out
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }

    fn float(&mut self, v: f64) {
        // The two values most series carry (up, success, reason markers); dtoa writes them so.
        if v.to_bits() == 0f64.to_bits() {
            self.out.extend_from_slice(b"0.0");
        } else if v.to_bits() == 1f64.to_bits() {
            self.out.extend_from_slice(b"1.0");
        } else if let Some(i) = exact_int(v) {
            // dtoa writes an integer-valued float below 1e21 as its digits and `.0`.
            self.int_signed(i);
            self.out.extend_from_slice(b".0");
        } else if v.is_finite() {
            self.out
                .extend_from_slice(dtoa::Buffer::new().format_finite(v).as_bytes());
        } else if self.om {
            self.out
                .extend_from_slice(dtoa::Buffer::new().format(v).as_bytes());
        } else {
            self.out.extend_from_slice(nonfinite(v).as_bytes());
        }
    }
}

/// `v` as an integer when it is one and every integer up to it is exact in an f64 (below
/// 2^53), so the conversion loses nothing; not for -0.0 (dtoa writes `-0.0`), NaN, or infinity.
fn exact_int(v: f64) -> Option<i64> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if v.fract() == 0.0 && v.abs() < EXACT && v.to_bits() != (-0f64).to_bits() {
        Some(v as i64)
    } else {
        None
    }
}

/// The labels of `l`, comma-separated, without braces; every series has at least one.
fn labels(out: &mut Vec<u8>, l: &Labels<'_>) {
    let mut first = l.pre.is_empty();
    out.extend_from_slice(l.pre);
    for (k, v) in l.pairs() {
        if !first {
            out.push(b',');
        }
        first = false;
        label(out, k, v);
    }
}

/// `key="value"`, the value escaped only when it holds `\`, `"` or a newline.
fn label(out: &mut Vec<u8>, k: &str, v: &str) {
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(b"=\"");
    label_value(out, v);
    out.push(b'"');
}

fn label_value(out: &mut Vec<u8>, v: &str) {
    if v.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        escaped(out, v);
    } else {
        out.extend_from_slice(v.as_bytes());
    }
}

#[cold]
fn escaped(out: &mut Vec<u8>, v: &str) {
    for b in v.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            _ => out.push(b),
        }
    }
}

/// 0.0.4's spelling of non-finite values.
fn nonfinite(v: f64) -> &'static str {
    if v.is_nan() {
        "NaN"
    } else if v.is_sign_positive() {
        "+Inf"
    } else {
        "-Inf"
    }
}

/// An OpenMetrics `le` value: prometheus-client writes a finite bound with dtoa.
fn le_openmetrics(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".to_string()
    } else {
        dtoa::Buffer::new().format(v).to_string()
    }
}

/// A 0.0.4 `le` value as client_golang writes it (`strconv.FormatFloat(v, 'g', -1, 64)`), in
/// prometheus-client's rendering (`GoFloat` in `encoding/prometheus_text.rs`): integers below
/// 1e6 without a fraction, plain decimals in [1e-4, 1e6), else `1e-05`-style exponents.
fn go_float(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e6 {
        return itoa::Buffer::new().format(v as i64).to_string();
    }
    if (1e-4..1e6).contains(&v.abs()) {
        return v.to_string();
    }
    if !v.is_finite() {
        return nonfinite(v).to_string();
    }
    let sci = format!("{v:e}");
    let Some(e) = sci.find('e') else {
        return sci;
    };
    let (mantissa_e, exponent) = sci.split_at(e + 1);
    let mut out = mantissa_e.to_string();
    match exponent.parse::<i32>() {
        Ok(x) => {
            let _ = write!(out, "{x:+03}");
        }
        Err(_) => out.push_str(exponent),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauge_line(om: bool, v: f64) -> String {
        let mut out = Vec::new();
        let (mut le, mut series) = (LeCache::default(), String::new());
        Writer::new(&mut out, om, "g", Kind::Gauge, &mut series, &mut le).gauge(&Labels::NONE, v);
        String::from_utf8(out).expect("utf-8")
    }

    /// The fast paths agree with dtoa, and non-finite values are spelled per format.
    #[test]
    fn floats_as_prometheus_client_writes_them() {
        for v in [0.0, 1.0, -0.0, 2.0, 0.5, 1e21, 1.75e9, 1.5e-7, 0.000187] {
            let want = format!("g {}\n", dtoa::Buffer::new().format(v));
            assert_eq!(gauge_line(false, v), want, "{v}");
            assert_eq!(gauge_line(true, v), want, "{v}");
        }
        // integer-valued floats (the fast path) over many magnitudes, both signs, up to and
        // past the 2^53 edge, and fractions next to integers
        let mut values = vec![
            9_007_199_254_740_991.0,
            9_007_199_254_740_992.0,
            9_007_199_254_740_994.0,
            1e15,
            1e16,
            1e20,
            1e22,
            1_750_000_000.0,
            1_750_000_000.5,
            0.999_999_999_999_999_9,
            f64::MAX,
            f64::MIN_POSITIVE,
            f64::EPSILON,
        ];
        let mut x = 1.0f64;
        while x < 1e23 {
            values.extend([x, x - 1.0, x + 1.0, x * 7.0, x * 3.0 + 0.25]);
            x *= 3.0;
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            values.push((seed >> (seed % 50)) as f64);
            values.push(f64::from_bits(seed));
        }
        for v in values
            .iter()
            .flat_map(|v| [*v, -*v])
            .filter(|v| v.is_finite())
        {
            let want = format!("g {}\n", dtoa::Buffer::new().format(v));
            assert_eq!(gauge_line(false, v), want, "{v:e}");
        }
        assert_eq!(gauge_line(false, f64::INFINITY), "g +Inf\n");
        assert_eq!(gauge_line(false, f64::NEG_INFINITY), "g -Inf\n");
        assert_eq!(gauge_line(false, f64::NAN), "g NaN\n");
        assert_eq!(gauge_line(true, f64::INFINITY), "g inf\n");
        assert_eq!(gauge_line(true, f64::NAN), "g NaN\n");
    }

    /// A run started by `begin_last` writes what `gauge` writes with the last label pushed.
    #[test]
    fn gauge_last_is_gauge_with_one_more_label() {
        let pre = b"mailbox=\"a\\\"b\",protocol=\"imap\"";
        let cases: [Labels<'_>; 3] = [
            Labels::rendered(pre),
            Labels::of([("credential", "x\ny")]),
            Labels::NONE,
        ];
        for om in [false, true] {
            for l in &cases {
                let (mut le, mut series) = (LeCache::default(), String::new());
                let (mut want, mut got) = (Vec::new(), Vec::new());
                let mut w = Writer::new(&mut want, om, "f", Kind::Gauge, &mut series, &mut le);
                for (value, v) in [("dns", 0.5), ("odd\"\\", 0.0), ("tls", 1e-7)] {
                    let mut with = *l;
                    with.push(("phase", value));
                    w.gauge(&with, v);
                }
                let mut w = Writer::new(&mut got, om, "f", Kind::Gauge, &mut series, &mut le);
                w.begin_last(l, "phase");
                for (value, v) in [("dns", 0.5), ("odd\"\\", 0.0), ("tls", 1e-7)] {
                    w.gauge_last(value, v);
                }
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&want)
                );
            }
        }
    }

    #[test]
    fn go_style_bucket_bounds() {
        let cases = [
            (0.005, "0.005"),
            (1.0, "1"),
            (30.0, "30"),
            (0.0, "0"),
            (1e6, "1e+06"),
            (2.5e-5, "2.5e-05"),
            (1.5e300, "1.5e+300"),
            (f64::INFINITY, "+Inf"),
        ];
        for (v, want) in cases {
            assert_eq!(go_float(v), want, "{v}");
        }
    }

    #[test]
    fn label_values_escaped_only_when_needed() {
        let mut out = Vec::new();
        label(&mut out, "k", "plain");
        out.push(b' ');
        label(&mut out, "k", "a\\b\"c\nd λ");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "k=\"plain\" k=\"a\\\\b\\\"c\\nd λ\""
        );
    }
}

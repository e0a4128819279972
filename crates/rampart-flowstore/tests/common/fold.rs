//! The straightforward computation the store's answers are checked
//! against: a HashMap fold over the same rows, written from the issue's
//! definitions (bytes and packets multiplied by the sampling rate and the
//! resampling, flows by the resampling; a flow counts at its start) and
//! not from the store's code.

#![allow(dead_code)]

use std::collections::HashMap;

use rampart_flow::FlowRecord;
use rampart_flowstore::{Dim, DimValue, FlowRow, Metric, TopEntry};

pub fn natural(dim: Dim, r: &FlowRow) -> DimValue {
    let f = &r.flow;
    match dim {
        Dim::Src => DimValue::Addr(f.src_addr),
        Dim::Dst => DimValue::Addr(f.dst_addr),
        Dim::SrcPort => DimValue::Port(f.src_port),
        Dim::DstPort => DimValue::Port(f.dst_port),
        Dim::Proto => DimValue::Proto(f.protocol),
        Dim::Device => DimValue::Device(r.device),
        Dim::Direction => DimValue::Direction(f.direction),
        Dim::SrcCountry => DimValue::Country(r.src_country),
        Dim::DstCountry => DimValue::Country(r.dst_country),
        Dim::SrcAsn => DimValue::Asn(r.src_asn),
        Dim::DstAsn => DimValue::Asn(r.dst_asn),
    }
}

/// (bytes, packets, flows) the row stands for.
pub fn counts(r: &FlowRow) -> [u64; 3] {
    let f = &r.flow;
    let sampling = u64::from(f.sampling_rate).max(1);
    let resample = u64::from(f.resample).max(1);
    [
        f.bytes * sampling * resample,
        f.packets * sampling * resample,
        resample,
    ]
}

pub fn metric_index(m: Metric) -> usize {
    match m {
        Metric::Bytes => 0,
        Metric::Packets => 1,
        Metric::Flows => 2,
    }
}

pub fn in_window(r: &FlowRow, lo: i64, hi: i64) -> bool {
    let s = r.flow.start_ms as i64;
    s >= lo && s < hi
}

pub type Pred<'a> = &'a dyn Fn(&FlowRecord) -> bool;

pub fn top(
    rows: &[FlowRow],
    dim: Dim,
    lo: i64,
    hi: i64,
    pred: Pred,
) -> HashMap<DimValue, [u64; 3]> {
    let mut m: HashMap<DimValue, [u64; 3]> = HashMap::new();
    for r in rows
        .iter()
        .filter(|r| in_window(r, lo, hi) && pred(&r.flow))
    {
        let e = m.entry(natural(dim, r)).or_default();
        for (a, b) in e.iter_mut().zip(counts(r)) {
            *a += b;
        }
    }
    m
}

/// (bytes, packets, flows, records)
pub fn totals(rows: &[FlowRow], lo: i64, hi: i64, pred: Pred) -> [u64; 4] {
    let mut t = [0u64; 4];
    for r in rows
        .iter()
        .filter(|r| in_window(r, lo, hi) && pred(&r.flow))
    {
        let c = counts(r);
        t[0] += c[0];
        t[1] += c[1];
        t[2] += c[2];
        t[3] += 1;
    }
    t
}

/// Checks a top-N answer against the fold: exactly the expected counts for
/// every key returned, ordered by the metric, as many as expected, and the
/// same metric values as the expected top N (ties may pick either key).
pub fn check_top(
    ans: &[TopEntry],
    expect: &HashMap<DimValue, [u64; 3]>,
    metric: Metric,
    n: usize,
    what: &str,
) {
    let mi = metric_index(metric);
    assert_eq!(ans.len(), n.min(expect.len()), "{what}: number of entries");
    for e in ans {
        let want = expect
            .get(&e.key)
            .unwrap_or_else(|| panic!("{what}: unexpected key {:?}", e.key));
        assert_eq!(
            [e.bytes, e.packets, e.flows],
            *want,
            "{what}: counts of {:?}",
            e.key
        );
    }
    let got: Vec<u64> = ans
        .iter()
        .map(|e| [e.bytes, e.packets, e.flows][mi])
        .collect();
    let mut want: Vec<u64> = expect.values().map(|c| c[mi]).collect();
    want.sort_unstable_by(|a, b| b.cmp(a));
    want.truncate(n);
    assert_eq!(got, want, "{what}: ranking by {metric:?}");
}

/// Per-bucket values of the metric, buckets aligned to `width` from the
/// epoch, for rows passing `keep`.
pub fn series(
    rows: &[FlowRow],
    lo: i64,
    hi: i64,
    width: i64,
    metric: Metric,
    keep: &dyn Fn(&FlowRow) -> bool,
) -> (Vec<i64>, Vec<u64>) {
    let first = lo.div_euclid(width) * width;
    let mut starts = Vec::new();
    let mut t = first;
    while t < hi {
        starts.push(t);
        t += width;
    }
    let mut vals = vec![0u64; starts.len()];
    for r in rows.iter().filter(|r| in_window(r, lo, hi) && keep(r)) {
        let i = ((r.flow.start_ms as i64 - first) / width) as usize;
        vals[i] += counts(r)[metric_index(metric)];
    }
    (starts, vals)
}

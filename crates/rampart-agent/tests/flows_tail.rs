//! Tailing a Zeek conn.log through the pipeline into sealed batches: a
//! rename rotation, a copytruncate rotation, and an agent restart (with the
//! log rotated while it was down) that keeps both the tail positions and
//! the data controls. Each test checks the exact set of lines shipped:
//! none twice, none skipped.
//!
//! The lines are the third data row of Zeek's own `core.pppoe` conn.log
//! baseline (shared/testdata/zeek_conn_log), whose `ts` column btest
//! canonified to `XXXXXXXXXX.XXXXXX`; each test line gets a distinct real
//! `ts` so it can be told apart. Everything else in the row is as Zeek
//! wrote it: fe80::c801:eff:fe88:8 port 547 to fe80::ce05:eff:fe88:0 port
//! 546, udp, 2 packets and 288 IP bytes from the originator, none back.

mod flowkit;

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use flowkit::{append, wait_for, Env, ZEEK};
use rampart_agent::masking::Controls;
use rampart_agent::pipeline::{FlowCollectors, FlowOptions};
use rampart_flow::FlowFlags;
use rampart_proto::controls::{DataControls, Truncate};

/// The conn.log header lines of the baseline (without btest's first line).
fn header() -> Vec<u8> {
    let log = std::fs::read_to_string(format!("{ZEEK}/core.pppoe/conn.log")).unwrap();
    let mut h = String::new();
    for l in log
        .lines()
        .filter(|l| l.starts_with('#') && !l.starts_with("###"))
    {
        if l.starts_with("#close") {
            break;
        }
        h.push_str(l);
        h.push('\n');
    }
    assert!(h.contains("#fields\tts\tuid\tid.orig_h"));
    h.into_bytes()
}

/// The baseline row with `ts` = 1,600,000,000 + `n` seconds.
fn line(n: u64) -> Vec<u8> {
    let log = std::fs::read_to_string(format!("{ZEEK}/core.pppoe/conn.log")).unwrap();
    let row = log
        .lines()
        .find(|l| l.contains("CmES5u32sYpV7JYN"))
        .unwrap();
    format!(
        "{}\n",
        row.replace(
            "XXXXXXXXXX.XXXXXX",
            &format!("{}.000000", 1_600_000_000 + n)
        )
    )
    .into_bytes()
}

fn lines(range: std::ops::Range<u64>) -> Vec<u8> {
    range.flat_map(line).collect()
}

fn opts(path: &Path) -> FlowOptions {
    FlowOptions {
        zeek_conn: vec![path.to_path_buf()],
        ..Env::options()
    }
}

fn label(path: &Path) -> String {
    format!("zeek:{}", path.display())
}

/// The `n` of every shipped flow, from its start time, in shipping order.
fn shipped(env: &Env) -> Vec<u64> {
    env.drain_records()
        .iter()
        .map(|r| {
            assert_eq!(r.src_port, 547);
            assert_eq!((r.packets, r.bytes, r.protocol), (2, 288, 17));
            r.start_ms / 1000 - 1_600_000_000
        })
        .collect()
}

fn file_flows(c: &FlowCollectors, path: &Path) -> u64 {
    c.status().files.get(&label(path)).map_or(0, |f| f.flows)
}

/// Waits until the tailer has opened the file and reached `offset`.
fn wait_at(c: &FlowCollectors, path: &Path, offset: u64) {
    wait_for(10, "the tailer to reach the end", || {
        c.status()
            .files
            .get(&label(path))
            .is_some_and(|f| f.offset == offset)
    });
}

#[test]
fn first_run_starts_at_the_end_and_a_rename_rotation_loses_nothing() {
    let env = Env::new();
    let path = env.path("conn.log");
    let mut initial = header();
    initial.extend(lines(0..3));
    std::fs::write(&path, &initial).unwrap();
    let c = env.start(opts(&path));
    wait_at(&c, &path, initial.len() as u64);

    append(&path, &lines(3..6));
    wait_for(10, "3 flows", || file_flows(&c, &path) == 3);
    // The writer finishes the file, renames it away and starts a new one.
    append(&path, &line(6));
    std::fs::rename(&path, env.path("conn.log.1")).unwrap();
    let mut fresh = header();
    fresh.extend(lines(7..10));
    std::fs::write(&path, &fresh).unwrap();
    wait_for(10, "7 flows", || file_flows(&c, &path) == 7);
    let status = c.status();
    c.stop();

    let f = &status.files[&label(&path)];
    assert_eq!((f.rotations, f.truncations, f.parse_errors), (1, 0, 0));
    // Lines 0-2 were there before the agent first started: not read.
    assert_eq!(shipped(&env), (3..10).collect::<Vec<_>>());
}

#[test]
fn copytruncate_rotation_reads_the_truncated_file_from_its_start() {
    let env = Env::new();
    let path = env.path("conn.log");
    std::fs::write(&path, header()).unwrap();
    let c = env.start(opts(&path));
    wait_at(&c, &path, header().len() as u64);

    append(&path, &lines(0..3));
    wait_for(10, "3 flows", || file_flows(&c, &path) == 3);
    // logrotate's copytruncate: copy, then truncate in place; the writer
    // goes on appending (no new header: Zeek does not know).
    std::fs::copy(&path, env.path("conn.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&path, &lines(3..5));
    wait_for(10, "5 flows", || file_flows(&c, &path) == 5);
    let status = c.status();
    c.stop();

    let f = &status.files[&label(&path)];
    assert_eq!((f.truncations, f.rotations, f.parse_errors), (1, 0, 0));
    assert_eq!(shipped(&env), (0..5).collect::<Vec<_>>());
}

#[test]
fn restart_keeps_tail_positions_and_data_controls_even_across_a_rotation() {
    let env = Env::new();
    let path = env.path("conn.log");
    Controls::load(&env.sd)
        .set(DataControls {
            version: 5,
            truncate: Some(Truncate::default()),
            ..DataControls::default()
        })
        .unwrap();
    std::fs::write(&path, header()).unwrap();

    let c = env.start(opts(&path));
    wait_at(&c, &path, header().len() as u64);
    append(&path, &lines(0..3));
    wait_for(10, "3 flows", || file_flows(&c, &path) == 3);
    c.stop();

    // While the agent is down: more lines, then a rotation.
    append(&path, &lines(3..6));
    std::fs::rename(&path, env.path("conn.log.1")).unwrap();
    let mut fresh = header();
    fresh.extend(lines(6..8));
    std::fs::write(&path, &fresh).unwrap();

    // A new process: controls and positions come from the state dir only.
    let controls = Arc::new(Controls::load(&env.sd));
    assert_eq!(controls.current().version(), 5);
    let c = env.start_with(opts(&path), controls);
    wait_for(10, "5 flows", || file_flows(&c, &path) == 5);
    append(&path, &line(8));
    wait_for(10, "6 flows", || file_flows(&c, &path) == 6);
    let status = c.status();
    c.stop();

    assert_eq!(status.controls_version, 5);
    assert_eq!(status.files[&label(&path)].rotations, 1);
    let records = env.drain_records();
    let ns: Vec<u64> = records
        .iter()
        .map(|r| r.start_ms / 1000 - 1_600_000_000)
        .collect();
    assert_eq!(ns, (0..9).collect::<Vec<_>>(), "each line exactly once");
    // Masked under the persisted controls before and after the restart:
    // fe80::c801:eff:fe88:8 cut to its /48.
    let fe80: IpAddr = "fe80::".parse().unwrap();
    for r in &records {
        assert_eq!((r.src_addr, r.dst_addr), (fe80, fe80));
        assert_eq!(
            r.flags & FlowFlags::ADDR_TRUNCATED,
            FlowFlags::ADDR_TRUNCATED
        );
    }
}

#[test]
fn an_overlong_line_is_counted_and_skipped() {
    let env = Env::new();
    let path = env.path("conn.log");
    std::fs::write(&path, header()).unwrap();
    let c = env.start(opts(&path));
    wait_at(&c, &path, header().len() as u64);
    append(&path, &line(0));
    let mut long = vec![b'x'; rampart_flow::zeek::MAX_LINE_LEN * 2];
    long.push(b'\n');
    append(&path, &long);
    append(&path, &line(1));
    wait_for(10, "2 flows", || file_flows(&c, &path) == 2);
    let status = c.status();
    c.stop();
    let f = &status.files[&label(&path)];
    assert_eq!((f.long_lines, f.parse_errors), (1, 0));
    assert_eq!(shipped(&env), vec![0, 1]);
}

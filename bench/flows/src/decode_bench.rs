//! `flowgen decode-bench`: single-thread throughput of `rampart_flow::Decoder`.
//!
//! The capture's UDP payloads are loaded into memory first (so file IO and
//! pcap parsing are not measured), then decoded in passes by one decoder,
//! the way a collector thread would: the exporter address and the packet's
//! timestamp as `now`, records appended to a batch that is taken every
//! datagram. The figure is flows per CPU second of this thread
//! (`getrusage(RUSAGE_THREAD)`, user + system), i.e. flows/s per core,
//! independent of what else runs on the machine.

use std::fs::File;
use std::io::BufReader;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_file::pcap::PcapReader;
use rampart_flow::{Decoder, DecoderConfig, FlowRecord};

#[derive(Args)]
pub struct DecodeBenchArgs {
    /// Pcap (Ethernet) of exporter datagrams, e.g. from `flowgen --pcap`.
    pcap: PathBuf,
    /// Keep decoding in passes until this much CPU time is spent.
    #[arg(long, default_value_t = 5.0)]
    min_cpu_s: f64,
    /// Load at most this many bytes of payload (the rest of the file is
    /// ignored).
    #[arg(long, default_value_t = 2 << 30)]
    max_bytes: u64,
}

struct Datagram {
    exporter: IpAddr,
    ts_ms: u64,
    payload: Vec<u8>,
}

/// CPU time (user + system) of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct we pass; all-zero is a valid
    // `rusage`.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_THREAD with a valid pointer to an owned rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn load(a: &DecodeBenchArgs) -> anyhow::Result<(Vec<Datagram>, u64)> {
    let f = File::open(&a.pcap).with_context(|| format!("open {}", a.pcap.display()))?;
    let mut r = PcapReader::new(BufReader::with_capacity(1 << 20, f))?;
    let mut out = Vec::new();
    let mut bytes = 0u64;
    let mut skipped = 0u64;
    while let Some(p) = r.next_packet() {
        let p = p?;
        let Ok(s) = SlicedPacket::from_ethernet(&p.data) else {
            skipped += 1;
            continue;
        };
        let exporter = match &s.net {
            Some(NetSlice::Ipv4(v4)) => IpAddr::V4(v4.header().source_addr()),
            Some(NetSlice::Ipv6(v6)) => IpAddr::V6(v6.header().source_addr()),
            _ => {
                skipped += 1;
                continue;
            }
        };
        let Some(TransportSlice::Udp(udp)) = &s.transport else {
            skipped += 1;
            continue;
        };
        let payload = udp.payload().to_vec();
        bytes += payload.len() as u64;
        if bytes > a.max_bytes {
            eprintln!(
                "decode-bench: stopped loading at --max-bytes {}",
                a.max_bytes
            );
            break;
        }
        out.push(Datagram {
            exporter,
            ts_ms: p.timestamp.as_millis() as u64,
            payload,
        });
    }
    Ok((out, skipped))
}

pub fn run(a: DecodeBenchArgs) -> anyhow::Result<()> {
    let (dgrams, skipped) = load(&a)?;
    if dgrams.is_empty() {
        bail!("no UDP datagrams in {}", a.pcap.display());
    }
    let mut dec = Decoder::new(DecoderConfig::default());
    let mut batch: Vec<FlowRecord> = Vec::with_capacity(64);

    // Correctness pass: totals, to compare with the generator's truth.
    let (mut flows, mut bytes, mut packets, mut refused) = (0u64, 0u64, 0u64, 0u64);
    for d in &dgrams {
        batch.clear();
        if dec
            .decode(d.exporter, &d.payload, d.ts_ms, &mut batch)
            .is_err()
        {
            refused += 1;
        }
        flows += batch.len() as u64;
        bytes += batch.iter().map(|r| r.bytes).sum::<u64>();
        packets += batch.iter().map(|r| r.packets).sum::<u64>();
    }
    let (mut malformed, mut missing) = (0u64, 0u64);
    for (_, c) in dec.exporters() {
        malformed += c.malformed;
        missing += c.missing_template;
    }
    println!("decoded_flows {flows} flows");
    println!("decoded_bytes {bytes} bytes");
    println!("decoded_packets {packets} packets");
    println!("decode_datagrams {} datagrams", dgrams.len());
    println!("decode_refused {refused} datagrams");
    println!("decode_malformed {malformed} sets");
    println!("decode_missing_template {missing} sets");
    println!("decode_skipped_packets {skipped} packets");

    // Timed passes: same decoder (templates stay learnt, as in a running
    // collector), time moving on each pass so nothing expires.
    let span = dgrams.last().map_or(0, |d| d.ts_ms) - dgrams.first().map_or(0, |d| d.ts_ms) + 1000;
    let cpu0 = thread_cpu();
    let wall0 = Instant::now();
    let mut decoded = 0u64;
    let mut pass = 1u64;
    loop {
        let shift = pass * span;
        for d in &dgrams {
            batch.clear();
            let _ = dec.decode(d.exporter, &d.payload, d.ts_ms + shift, &mut batch);
            decoded += batch.len() as u64;
        }
        pass += 1;
        if (thread_cpu() - cpu0).as_secs_f64() >= a.min_cpu_s {
            break;
        }
    }
    let cpu = (thread_cpu() - cpu0).as_secs_f64();
    let wall = wall0.elapsed().as_secs_f64();
    println!("decode_passes {} passes", pass - 1);
    println!("decode_cpu {cpu:.3} s");
    println!("decode_wall {wall:.3} s");
    println!(
        "decode_flows_per_cpu_s {:.0} flows/s/core",
        decoded as f64 / cpu
    );
    println!(
        "decode_mbit_per_cpu_s {:.0} Mbit/s/core",
        (pass - 1) as f64 * dgrams.iter().map(|d| d.payload.len()).sum::<usize>() as f64 * 8.0
            / cpu
            / 1e6
    );
    Ok(())
}

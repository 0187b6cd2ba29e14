//! The soak: streaming calls held for a long run with churn; RSS, heap, loss and lateness over
//! time (see the binary's docs).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::LIVE_BYTES;
use crate::args::Args;
use crate::engine::Ringcast;
use crate::host::{rss_kb, sfu_cpus};
use crate::ramp::ms;
use crate::sfu::Sfu;
use crate::system::System;

/// Runs the soak for `seconds`; returns the report and whether it passed.
pub(crate) fn soak(seconds: f64, args: &Args) -> Result<(Value, bool), String> {
    let calls = args.soak_calls;
    // Every packet decrypted at the SFU: a call whose SRTP broke at a sequence wrap stops being
    // counted there and fails the check at the end.
    let sfu = Sfu::start_decrypting(sfu_cpus(args))?;
    let mut rc = Ringcast::new(args.shards, args.send_path)?;
    eprintln!("[soak] connecting {calls} calls ...");
    rc.grow_to(calls, &sfu)?;
    std::thread::sleep(Duration::from_secs(1));
    let interval = Duration::from_secs_f64(
        args.soak_interval
            .unwrap_or((seconds / 20.0).clamp(1.0, 60.0)),
    );
    let churn = calls * args.churn_pct / 100;
    let t0 = Instant::now();
    let (sfu0, lost0) = sfu.totals()?;
    let first = rc.sample();
    let mut prev = first.clone();
    let mut samples: Vec<Value> = Vec::new();
    let mut rss = Vec::new();
    let mut unexpected: Vec<Value> = Vec::new();
    while t0.elapsed().as_secs_f64() < seconds {
        std::thread::sleep(interval);
        for (chat, reason) in rc.take_unexpected_ends() {
            eprintln!("[soak] call {chat} ended on its own: {reason:?}");
            unexpected.push(json!({"chat": chat, "reason": format!("{reason:?}")}));
        }
        if churn > 0 {
            rc.churn(churn, &sfu)?;
        }
        let s = rc.sample();
        let c = sfu.counts()?;
        let (packets, lost, wrapped) = (c.packets, c.lost, c.wrapped);
        let window = s.lateness.since(&prev.lateness);
        let (r, heap) = (rss_kb(), LIVE_BYTES.load(Ordering::Relaxed) / 1024);
        rss.push(r);
        let t = t0.elapsed().as_secs_f64();
        eprintln!(
            "[soak] {t:>6.0} s: {} calls, {} packets sent, {} counted by the SFU, lost {}, \
             p99 {:.2} ms, RSS {r} KB, heap {heap} KB, {wrapped} calls past a sequence wrap",
            s.connected,
            s.packets_sent - first.packets_sent,
            packets - sfu0,
            lost - lost0,
            ms(window.percentile(0.99)),
        );
        samples.push(json!({
            "t_s": t, "calls": s.connected, "rss_kb": r, "heap_kb": heap,
            "packets_sent": s.packets_sent - first.packets_sent,
            "packets_counted_by_sfu": packets - sfu0, "lost": lost - lost0,
            "p99_lateness_ms": ms(window.percentile(0.99)),
            "calls_past_a_wrap": wrapped,
        }));
        prev = s;
    }
    // Let the last packets land before the final count.
    std::thread::sleep(Duration::from_millis(300));
    let (packets, lost) = sfu.totals()?;
    let lost = lost - lost0;
    let check = rc.verify_live(&sfu)?;
    for f in &check.failures {
        eprintln!("[soak] not verified: {f}");
    }
    let warm = rss.get(rss.len() / 4).copied().unwrap_or(0);
    let end = rss.last().copied().unwrap_or(0);
    let allowed = warm / 20 + 4096;
    let flat = end <= warm + allowed;
    let all = prev.lateness.since(&first.lateness);
    let pass = lost == 0
        && flat
        && unexpected.is_empty()
        && !samples.is_empty()
        && check.verified == check.calls;
    eprintln!(
        "[soak] {:.0} s, {calls} calls, {} replaced, {} ended on their own: lost {lost}, RSS \
         {warm} KB after warm-up -> {end} KB at the end (allowed +{allowed} KB); {} of {} live \
         calls verified at the SFU, {} of them past the RTP sequence wrap: {}",
        t0.elapsed().as_secs_f64(),
        churn * samples.len(),
        unexpected.len(),
        check.verified,
        check.calls,
        check.verified_past_wrap,
        if pass { "pass" } else { "FAIL" }
    );
    Ok((
        json!({
            "soak_seconds": t0.elapsed().as_secs_f64(), "calls": calls,
            "calls_replaced": churn * samples.len(), "lost": lost,
            "packets_counted_by_sfu": packets - sfu0,
            "rss_kb_after_warmup": warm, "rss_kb_end": end, "rss_flat": flat,
            "p99_lateness_ms": ms(all.percentile(0.99)), "max_lateness_ms": ms(all.max()),
            "ended_unexpectedly": unexpected, "samples": samples,
            "live_calls": check.calls, "live_calls_verified": check.verified,
            "verified_past_wrap": check.verified_past_wrap, "not_verified": check.failures,
            "pass": pass,
        }),
        pass,
    ))
}

//! The connect burst: many calls created at once on a fresh engine, timed until all are up.

use std::time::{Duration, Instant};

use ringcast::Engine;
use serde_json::{Value, json};

use crate::args::Args;
use crate::host::sfu_cpus;
use crate::ramp::ms;
use crate::sfu::Sfu;
use crate::system::CHATS;

/// One connect burst: `n` calls created at once on a fresh engine with a certificate pool of
/// `pool` (filled before the clock starts; 0 = every certificate generated inline).
pub(crate) fn burst(n: usize, pool: usize, args: &Args) -> Result<Value, String> {
    let sfu = Sfu::start(sfu_cpus(args))?;
    let engine = Engine::builder()
        .shards(args.shards)
        .send_path(args.send_path)
        .cert_pool(pool)
        .event_queue(n * 4 + 64)
        .command_queue(n + 64)
        .build()
        .map_err(|e| e.to_string())?;
    let fill_deadline = Instant::now() + Duration::from_secs(120);
    while engine.cert_pool_ready() < pool && Instant::now() < fill_deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let t0 = Instant::now();
    let joins = (0..n)
        .map(|i| engine.create_call(i as i64).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let created = t0.elapsed();
    // On Telegram these are n phone.joinGroupCall requests sent in parallel; here HTTP posts
    // from a few client threads at once.
    let joins: Vec<(usize, String)> = joins
        .into_iter()
        .enumerate()
        .map(|(i, j)| (i % CHATS, j))
        .collect();
    let answers = sfu.join_all(&joins)?;
    let answered = t0.elapsed();
    for (i, a) in answers.iter().enumerate() {
        engine.connect(i as i64, a).map_err(|e| e.to_string())?;
    }
    crate::engine::wait_connected(&engine, n, Duration::from_secs(60))
        .map_err(|e| format!("burst: {e}"))?;
    let done = t0.elapsed();
    let engine_ms = ms(created) + ms(done - answered);
    eprintln!(
        "[burst] {n} calls, certificate pool {pool}: create {:.0} ms, SFU answers {:.0} ms, \
         connect {:.0} ms; engine time {engine_ms:.0} ms, wall {:.0} ms ({} certificates inline)",
        ms(created),
        ms(answered - created),
        ms(done - answered),
        ms(done),
        engine.certs_generated_inline(),
    );
    Ok(json!({
        "calls": n, "cert_pool": pool, "create_ms": ms(created),
        "sfu_answers_ms": ms(answered - created), "connect_ms": ms(done - answered),
        "engine_ms": engine_ms, "wall_ms": ms(done),
        "certs_generated_inline": engine.certs_generated_inline(),
    }))
}

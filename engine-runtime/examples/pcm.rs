//! PCM in and out: bring your own audio (the pytgvoip model).
//!
//! Starts an in-process SFU mock and puts two calls in one chat. The application pushes 20 ms
//! frames of 16-bit 48 kHz mono PCM into call 1 (a sine, or a raw `s16le` file), and reads
//! the decoded audio of call 1 from call 2's PCM sink, printing its pitch every second and
//! optionally writing it to a raw file.
//!
//! ```text
//! cargo run -p ringcast --example pcm -- [--seconds 5] [--hz 523] [--input in.s16le] [--output out.s16le]
//! ```
//! (`ffmpeg -i song.mp3 -f s16le -ac 1 -ar 48000 in.s16le` makes an input; `ffplay -f s16le
//! -ar 48000 -ch_layout mono out.s16le` plays the output.)

use std::error::Error;
use std::f64::consts::TAU;
use std::io::Write;
use std::time::{Duration, Instant};

use ringcast::{
    CallState, Engine, EventKind, PcmPushError, PcmSinkConfig, PcmSourceConfig, StreamSource,
};
use sfu_mock::analysis::dominant_frequency_hz;
use sfu_mock::server::{Server, ServerOptions};

/// PCM in and out through two calls of an in-process SFU mock.
#[derive(Debug, clap::Parser)]
struct Args {
    /// How long to stream, in seconds.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Frequency of the sine pushed when no `--input` is given, in Hz.
    #[arg(long, default_value_t = 523.0)]
    hz: f64,
    /// Raw s16le 48 kHz mono file to push instead of the sine.
    #[arg(long)]
    input: Option<String>,
    /// Raw s16le file to write what call 2 heard to.
    #[arg(long)]
    output: Option<String>,
}

/// The audio to push: the input file's samples, or `seconds` of a half-scale sine.
fn audio(args: &Args) -> Result<Vec<i16>, Box<dyn Error>> {
    if let Some(path) = &args.input {
        let bytes = std::fs::read(path)?;
        return Ok(bytes
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect());
    }
    let samples = usize::try_from(args.seconds * 48_000)?;
    Ok((0..samples)
        .map(|i| ((i as f64 * TAU * args.hz / 48_000.0).sin() * 16_384.0).round() as i16)
        .collect())
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = <Args as clap::Parser>::parse();
    let sfu = Server::start(ServerOptions::default())?;
    let engine = Engine::builder().shards(1).build()?;

    // Call 1 speaks PCM; call 2 listens through a PCM sink.
    for call in [1, 2] {
        let payload = engine.create_call(call)?;
        let response = sfu.join(100, payload.as_bytes())?;
        engine.connect(call, &response)?;
    }
    let (source, writer) = StreamSource::pcm(&PcmSourceConfig::default())?;
    engine.set_stream_sources(1, source)?;
    let sink = engine.set_pcm_sink(2, &PcmSinkConfig::default())?;

    // The application's audio thread. try_push never blocks: when the queue (1 s) is full,
    // wait a little. Dropping the writer at the end ends the stream after the queue drains.
    let samples = audio(&args)?;
    let pusher = std::thread::spawn(move || {
        let frames = samples.chunks_exact(writer.frame_len());
        let mut pushed = 0_u64;
        for frame in frames {
            loop {
                match writer.try_push(frame) {
                    Ok(()) => break,
                    Err(PcmPushError::Full) => std::thread::sleep(Duration::from_millis(10)),
                    Err(e) => {
                        eprintln!("push: {e}");
                        return writer.stats();
                    }
                }
            }
            pushed += 1;
        }
        let stats = writer.stats();
        println!("pushed {pushed} frames");
        stats
    });

    let mut output = match &args.output {
        Some(path) => Some(std::io::BufWriter::new(std::fs::File::create(path)?)),
        None => None,
    };
    let mut second: Vec<f32> = Vec::with_capacity(48_000);
    let mut frames = 0_u64;
    let mut ended = false;
    let deadline = Instant::now() + Duration::from_secs(args.seconds + 30);
    while Instant::now() < deadline && !ended {
        while let Ok(event) = engine.events().try_recv() {
            match event.kind {
                EventKind::StreamEnded { .. } if event.chat_id == 1 => ended = true,
                EventKind::ConnectionChanged(CallState::Ended(reason)) => {
                    return Err(format!("call {} ended: {reason:?}", event.chat_id).into());
                }
                _ => {}
            }
        }
        let Ok(frame) = sink.frames().recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        frames += 1;
        if let Some(out) = &mut output {
            for s in &frame.samples {
                out.write_all(&s.to_le_bytes())?;
            }
        }
        second.extend(frame.samples.iter().map(|&s| f32::from(s) / 32_768.0));
        if second.len() >= 48_000 {
            match dominant_frequency_hz(&second, 48_000) {
                Some(hz) => println!("call 2 hears ssrc {}: {hz:.1} Hz", frame.ssrc),
                None => println!("call 2 hears ssrc {}: silence", frame.ssrc),
            }
            second.clear();
        }
    }
    let source_stats = pusher.join().map_err(|_| "pusher thread panicked")?;
    println!("source: {source_stats:?}");
    println!("sink: {frames} frames read, {:?}", sink.stats());
    if let Some(mut out) = output {
        out.flush()?;
    }
    Ok(())
}

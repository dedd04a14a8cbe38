//! The batch path at scale: the bench book written as input files, and the end-to-end timing
//! of a margin run (parse, margin, liquidation prices, write) on it.

use crate::inputs::{CliError, Loaded};
use crate::Inputs;
use pmargin_core::report::{BatchRun, ReportOptions};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

type Result<T> = std::result::Result<T, CliError>;

fn io_error(path: &Path, e: std::io::Error) -> CliError {
    CliError::Internal(format!("{}: cannot write: {e}", path.display()))
}

/// Writes `portfolio.json`, `market.json` and `params.json` of the bench's synthetic book into
/// `dir` (created if missing), for `pmargin margin` to read.
pub fn write_book(dir: &Path, accounts: usize, seed: u64) -> Result<String> {
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let book = pmargin_core::synthetic::book(accounts, seed)?;
    let (market, params) = pmargin_core::synthetic::market_and_params_json(false);
    for (name, value) in [("market.json", &market), ("params.json", &params)] {
        let path = dir.join(name);
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| CliError::Internal(format!("{name}: {e}")))?;
        std::fs::write(&path, text + "\n").map_err(|e| io_error(&path, e))?;
    }
    let path = dir.join("portfolio.json");
    let file = std::fs::File::create(&path).map_err(|e| io_error(&path, e))?;
    let mut out = std::io::BufWriter::new(file);
    pmargin_core::synthetic::write_portfolio(&book, &mut out)
        .and_then(|()| out.flush())
        .map_err(|e| io_error(&path, e))?;
    Ok(format!(
        "wrote {accounts} accounts (seed {seed}) to {}: portfolio.json, market.json, params.json\n",
        dir.display()
    ))
}

/// `pmargin margin --json`: checks every account, then writes the report to stdout as it is
/// computed. Nothing is written when an input is refused.
pub fn margin_json(loaded: Loaded) -> Result<String> {
    let run = start(loaded)?;
    run.check()?;
    let stdout = std::io::stdout();
    let out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    run.write_json(out, ReportOptions::default())
        .map_err(|e| CliError::Internal(format!("cannot write the report: {e}")))?;
    Ok(String::new())
}

/// Binds the inputs into a run, dropping the parsed portfolio once the book holds it.
fn start(loaded: Loaded) -> Result<BatchRun> {
    let Loaded {
        portfolio,
        market,
        params,
        history,
    } = loaded;
    let run = BatchRun::new(&portfolio, &market, &params, history.as_ref())?;
    // Freeing a large book's millions of names takes tens of milliseconds: done beside the
    // run rather than before it.
    std::thread::spawn(move || drop(portfolio));
    Ok(run)
}

/// `pmargin bench --end-to-end`: writes the bench book's input files to a temporary
/// directory, then times `margin --json` on them phase by phase (parse; bind and margin every
/// account; liquidation prices; write, the report going to a discarding sink), and the
/// streamed run as `margin --json` does it, end to end. Medians of `repeat` rounds.
/// The thread pool of a bench run (`threads`: all cores when none), after checking its sizes.
pub fn bench_pool(
    accounts: usize,
    threads: Option<usize>,
    repeat: usize,
) -> Result<rayon::ThreadPool> {
    if accounts == 0 || repeat == 0 {
        return Err(CliError::Input(
            "--accounts and --repeat must be at least 1".into(),
        ));
    }
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(t) = threads {
        builder = builder.num_threads(t);
    }
    builder
        .build()
        .map_err(|e| CliError::Internal(format!("thread pool: {e}")))
}

pub fn end_to_end(
    accounts: usize,
    threads: Option<usize>,
    repeat: usize,
    seed: u64,
) -> Result<String> {
    let pool = bench_pool(accounts, threads, repeat)?;
    let dir = std::env::temp_dir().join(format!("pmargin-bench-{}", std::process::id()));
    write_book(&dir, accounts, seed)?;
    let inputs = Inputs {
        portfolio: dir.join("portfolio.json"),
        market: dir.join("market.json"),
        params: dir.join("params.json"),
        history: None,
    };
    let mut rounds: Vec<[f64; 5]> = Vec::with_capacity(repeat);
    let mut bytes = 0u64;
    let result = pool.install(|| -> Result<()> {
        for round in 0..repeat {
            let t = Instant::now();
            let loaded = inputs.load()?;
            let parse = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let run = start(loaded)?;
            run.check()?;
            let margin = t.elapsed().as_secs_f64();
            // Liquidation prices alone: the report with them less the report without.
            let none = ReportOptions {
                liquidation_prices: false,
            };
            let t = Instant::now();
            run.write_json(std::io::sink(), none).map_err(internal)?;
            let without = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let mut counted = Counted(std::io::sink(), 0);
            run.write_json(&mut counted, ReportOptions::default())
                .map_err(internal)?;
            let with = t.elapsed().as_secs_f64();
            bytes = counted.1;
            drop(run);
            // The whole streamed path, as `margin --json` runs it, into a discarding sink.
            let t = Instant::now();
            let run = start(inputs.load()?)?;
            run.check()?;
            run.write_json(std::io::sink(), ReportOptions::default())
                .map_err(internal)?;
            let total = t.elapsed().as_secs_f64();
            eprintln!(
                "round {}/{repeat}: parse {:.0} ms, margin {:.0} ms, liquidation {:.0} ms, write {:.0} ms, end to end {:.0} ms",
                round + 1,
                parse * 1e3,
                margin * 1e3,
                (with - without) * 1e3,
                without * 1e3,
                total * 1e3
            );
            rounds.push([parse, margin, with - without, without, total]);
        }
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    let median = |k: usize| {
        let mut v: Vec<f64> = rounds.iter().map(|r| r[k]).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2] * 1e3
    };
    Ok(format!(
        "synthetic book: {accounts} accounts, {} positions (seed {seed})\n\
         threads: {}\n\
         report: {:.1} MB\n\
         median of {repeat}, ms: parse {:.0}, margin (bind, risk arrays, every requirement checked) {:.0}, \
         liquidation prices {:.0}, write {:.0}\n\
         end_to_end_ms: {:.0}\n",
        accounts * pmargin_core::synthetic::POSITIONS_PER_ACCOUNT,
        pool.current_num_threads(),
        bytes as f64 / 1e6,
        median(0),
        median(1),
        median(2),
        median(3),
        median(4),
    ))
}

fn internal(e: std::io::Error) -> CliError {
    CliError::Internal(format!("cannot write the report: {e}"))
}

/// A writer that counts what passes through it.
struct Counted<W>(W, u64);

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        self.1 += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

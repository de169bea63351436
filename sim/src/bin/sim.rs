//! The simulation runner (see `docs/simulation.md`); use it through `sim/run`.
//!
//! ```text
//! sim sweep --seeds N [--from S] [--scenario NAME] [--jobs J] [--twice]
//! sim replay --seed S [--scenario NAME]
//! sim planted [--seeds N] [--from S] [--scenario NAME]
//! ```

#[cfg(not(madsim))]
fn main() {
    eprintln!("the simulator must be built with RUSTFLAGS=\"--cfg madsim\": use sim/run");
    std::process::exit(2);
}

#[cfg(madsim)]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match cli::run(&args) {
        Ok(code) => std::process::exit(code),
        Err(message) => {
            eprintln!("sim: {message}\n\n{}", cli::USAGE);
            std::process::exit(2);
        }
    }
}

#[cfg(madsim)]
mod cli {
    use std::io::{IsTerminal, Write};
    use std::sync::mpsc;
    use std::time::Instant;

    use strata_sim::planted::{self, hunt, planted_bug, SEEDS_TO_CATCH_MAX};
    use strata_sim::run::{
        replay_report, run_seed, table_header, table_row, Scenario, SeedResult, Verdict,
    };
    use strata_sim::SCENARIOS;

    pub const USAGE: &str = "usage:
  sim sweep --seeds N [--from S] [--scenario NAME] [--jobs J] [--twice]
  sim replay --seed S [--scenario NAME]
  sim planted [--seeds N] [--from S] [--scenario NAME]

Scenarios: crash-restart, partition, clock, mixed, group-commit, tiered (tiered storage: the
broker offloads small segments to a faulty object store and keeps only the active segment
locally); and the detection scenarios lost-sync (a disk that loses acknowledged syncs) and
no-fsync (a broker that acknowledges before fsync), whose seeds are expected to fail: they show
the checker catches lost acknowledged writes; and the exploratory scenario bit-flip (0.1% of
disk reads flip a bit), whose failures are findings. Without --scenario, seed S runs scenario
number S mod 6 of that list (in both sweep and replay). --twice runs every seed a second time
and fails it if the trace hash differs. --jobs runs seeds on J threads at once.
planted (in a build with --cfg strata_bug=\"NAME\", see sim/run planted) runs seeds of the bug's
scenario from S (default 0) until one fails, at most N (default the stated bound), and prints
\"caught NAME at seed S (after K seeds)\"; exit code 1 if no seed failed.";

    struct Options {
        seeds: u64,
        from: u64,
        seed: Option<u64>,
        scenario: Option<String>,
        jobs: usize,
        twice: bool,
    }

    fn parse(args: &[String]) -> Result<Options, String> {
        let mut options = Options {
            seeds: 10,
            from: 0,
            seed: None,
            scenario: None,
            jobs: 1,
            twice: false,
        };
        let mut i = 0;
        while i < args.len() {
            let value = |i: usize| {
                args.get(i + 1)
                    .ok_or_else(|| format!("{} needs a value", args[i]))
            };
            let number = |i: usize| -> Result<u64, String> {
                let v = value(i)?;
                v.parse()
                    .map_err(|_| format!("{} takes a number, not {v:?}", args[i]))
            };
            match args[i].as_str() {
                "--seeds" => options.seeds = number(i)?,
                "--from" => options.from = number(i)?,
                "--seed" => options.seed = Some(number(i)?),
                "--jobs" => options.jobs = number(i)?.max(1) as usize,
                "--scenario" => {
                    let name = value(i)?;
                    if Scenario::named(name).is_none() {
                        return Err(format!("unknown scenario {name:?}"));
                    }
                    options.scenario = Some(name.clone());
                }
                "--twice" => {
                    options.twice = true;
                    i += 1;
                    continue;
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
            i += 2;
        }
        Ok(options)
    }

    /// The scenario seed `seed` runs: the one named, or the seed's turn in the rotation.
    fn scenario_for(seed: u64, name: Option<&str>) -> Scenario {
        let name = name.unwrap_or(SCENARIOS[(seed % SCENARIOS.len() as u64) as usize]);
        Scenario::named(name).expect("scenario names are checked when parsed")
    }

    pub fn run(args: &[String]) -> Result<i32, String> {
        let (command, rest) = args.split_first().ok_or("no command")?;
        let options = parse(rest)?;
        match command.as_str() {
            "sweep" => Ok(sweep(&options)),
            "planted" => planted(rest, &options),
            "replay" => {
                let seed = options.seed.ok_or("replay needs --seed")?;
                let result = run_seed(seed, &scenario_for(seed, options.scenario.as_deref()));
                print!("{}", replay_report(&result));
                Ok(if result.verdict.is_ok() { 0 } else { 1 })
            }
            other => Err(format!("unknown command {other:?}")),
        }
    }

    /// `sim planted`: hunts the bug compiled into this build.
    fn planted(args: &[String], options: &Options) -> Result<i32, String> {
        let bug = planted_bug().ok_or(
            "this build has no planted bug: build with --cfg strata_bug=\"NAME\" (sim/run planted NAME)",
        )?;
        let name = match &options.scenario {
            Some(name) => name.as_str(),
            None => planted::scenario_for(bug).ok_or("no scenario for this bug")?,
        };
        let scenario = Scenario::named(name).ok_or("unknown scenario")?;
        let seeds = if args.iter().any(|a| a == "--seeds") {
            options.seeds
        } else {
            SEEDS_TO_CATCH_MAX
        };
        let started = Instant::now();
        match hunt(&scenario, options.from..options.from + seeds) {
            Some(caught) => {
                let result = &caught.result;
                println!("{}", table_header());
                for panicked in &caught.panicked {
                    println!("{}", table_row(panicked));
                }
                println!("{}", table_row(result));
                println!(
                    "caught {bug} at seed {} (after {} seeds) in scenario {name}: {:?} [{:.1} wall s]",
                    result.seed,
                    caught.seeds_run,
                    result.verdict,
                    started.elapsed().as_secs_f64()
                );
                if !caught.panicked.is_empty() {
                    println!(
                        "({} earlier seeds panicked, not counted as caught by the checker)",
                        caught.panicked.len()
                    );
                }
                let exe = std::env::current_exe()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| "sim".to_string());
                println!(
                    "reproduce: {exe} replay --seed {} --scenario {name}",
                    result.seed
                );
                Ok(0)
            }
            None => {
                println!(
                    "NOT caught {bug}: seeds {}..{} of scenario {name} all passed [{:.1} wall s]",
                    options.from,
                    options.from + seeds,
                    started.elapsed().as_secs_f64()
                );
                Ok(1)
            }
        }
    }

    /// Runs one seed (twice with `--twice`) and returns the result to report.
    fn run_one(seed: u64, options_scenario: Option<&str>, twice: bool) -> SeedResult {
        let scenario = scenario_for(seed, options_scenario);
        let mut result = run_seed(seed, &scenario);
        if twice && result.verdict.is_ok() {
            let again = run_seed(seed, &scenario);
            let hashes = (
                result.outcome.as_ref().map(|o| o.trace_hash),
                again.outcome.as_ref().map(|o| o.trace_hash),
            );
            if hashes.0 != hashes.1 {
                result.verdict = Verdict::Invalid(format!(
                    "nondeterministic: trace hash {:x?} then {:x?}",
                    hashes.0, hashes.1
                ));
            }
            result.wall_s += again.wall_s;
        }
        result
    }

    fn sweep(options: &Options) -> i32 {
        let started = Instant::now();
        let tty = std::io::stderr().is_terminal();
        let seeds: Vec<u64> = (options.from..options.from + options.seeds).collect();
        println!("{}", table_header());
        let (tx, rx) = mpsc::channel::<SeedResult>();
        let queue = std::sync::Arc::new(std::sync::Mutex::new(seeds.clone().into_iter()));
        let mut threads = Vec::new();
        for _ in 0..options.jobs.min(seeds.len().max(1)) {
            let (tx, queue) = (tx.clone(), queue.clone());
            let scenario = options.scenario.clone();
            let twice = options.twice;
            threads.push(std::thread::spawn(move || loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                let Some(seed) = next else { break };
                if tx.send(run_one(seed, scenario.as_deref(), twice)).is_err() {
                    break;
                }
            }));
        }
        drop(tx);
        let (mut done, mut failed, mut simulated_s) = (0u64, 0u64, 0.0f64);
        let mut failures = Vec::new();
        for result in rx {
            done += 1;
            if !result.verdict.is_ok() {
                failed += 1;
                failures.push((result.seed, result.scenario.clone()));
            }
            if let Some(outcome) = &result.outcome {
                simulated_s += outcome.simulated_s;
            }
            let progress = format!(
                "sim: {done}/{} seeds done, {failed} failed, {:.0} simulated s, {:.1} wall s",
                seeds.len(),
                simulated_s,
                started.elapsed().as_secs_f64()
            );
            if tty {
                // Row on stdout, then the progress line redrawn in place on stderr.
                eprint!("\r\x1b[2K");
                println!("{}", table_row(&result));
                eprint!("{progress}");
            } else {
                println!("{}", table_row(&result));
                if done % 10 == 0 || done == seeds.len() as u64 {
                    eprintln!("{progress}");
                }
            }
            let _ = std::io::stderr().flush();
        }
        if tty {
            eprintln!("\r\x1b[2K");
        }
        for thread in threads {
            let _ = thread.join();
        }
        for (seed, scenario) in &failures {
            println!("reproduce: sim/run replay --seed {seed} --scenario {scenario}");
        }
        let wall_s = started.elapsed().as_secs_f64();
        println!(
            "sim: {} seeds, {failed} failed, {simulated_s:.0} simulated s, {wall_s:.1} wall s, {:.0}x",
            seeds.len(),
            simulated_s / wall_s.max(1e-9)
        );
        i32::from(failed > 0)
    }
}

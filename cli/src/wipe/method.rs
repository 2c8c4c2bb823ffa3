//! Wipe methods and their exact pass lists.

use rand_core::{OsRng, RngCore};

/// What one pass writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// These bytes, repeated from the start of the target.
    Constant(Vec<u8>),
    /// A seeded AES-256-CTR stream (see `stream.rs`).
    Random,
}

impl Pattern {
    /// The certificate's text for the pattern: hex bytes or `random`.
    pub fn label(&self) -> String {
        match self {
            Pattern::Constant(bytes) => hex::encode(bytes),
            Pattern::Random => "random".into(),
        }
    }
}

/// Which passes are read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyMode {
    None,
    Last,
    All,
}

impl VerifyMode {
    /// Parses `--verify`.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        match text {
            "none" => Ok(VerifyMode::None),
            "last" => Ok(VerifyMode::Last),
            "all" => Ok(VerifyMode::All),
            other => Err(crate::usage::usage(format!(
                "--verify must be none, last or all (got `{other}`)"
            ))),
        }
    }

    /// The name as `--verify` takes it.
    pub fn name(self) -> &'static str {
        match self {
            VerifyMode::None => "none",
            VerifyMode::Last => "last",
            VerifyMode::All => "all",
        }
    }
}

/// One planned pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassPlan {
    /// What the pass writes.
    pub pattern: Pattern,
    /// Whether the pass is read back.
    pub verify: bool,
}

/// A method expanded into its passes.
#[derive(Debug, Clone)]
pub struct WipePlan {
    /// The method as named on the command line.
    pub method: String,
    /// Every pass in order (rounds and blanking included).
    pub passes: Vec<PassPlan>,
    /// `--passes`.
    pub rounds: u32,
    /// `--blank`.
    pub blank: bool,
}

fn c(bytes: &[u8]) -> Pattern {
    Pattern::Constant(bytes.to_vec())
}

fn random_byte() -> u8 {
    // A fresh random pattern byte per method run, as DoD 5220.22-M and nwipe do.
    (OsRng.next_u32() & 0xff) as u8
}

/// The Gutmann (1996) pass list: 4 random, the 27 fixed patterns in a random order, 4 random.
fn gutmann() -> Vec<Pattern> {
    let mut fixed: Vec<Pattern> = vec![
        c(&[0x55]),
        c(&[0xaa]),
        c(&[0x92, 0x49, 0x24]),
        c(&[0x49, 0x24, 0x92]),
        c(&[0x24, 0x92, 0x49]),
    ];
    for nibble in 0..16u8 {
        fixed.push(c(&[nibble * 0x11]));
    }
    fixed.extend([
        c(&[0x92, 0x49, 0x24]),
        c(&[0x49, 0x24, 0x92]),
        c(&[0x24, 0x92, 0x49]),
        c(&[0x6d, 0xb6, 0xdb]),
        c(&[0xb6, 0xdb, 0x6d]),
        c(&[0xdb, 0x6d, 0xb6]),
    ]);
    // Fisher-Yates with OS randomness: Gutmann asks for the middle passes in random order.
    for i in (1..fixed.len()).rev() {
        let j = (OsRng.next_u64() % (i as u64 + 1)) as usize;
        fixed.swap(i, j);
    }
    let mut passes = vec![Pattern::Random; 4];
    passes.extend(fixed);
    passes.extend(vec![Pattern::Random; 4]);
    passes
}

/// Parses `custom:00,ff,random,55aa`.
fn custom(list: &str) -> anyhow::Result<Vec<Pattern>> {
    let mut passes = Vec::new();
    for item in list.split(',') {
        let item = item.trim().to_ascii_lowercase();
        if item == "random" {
            passes.push(Pattern::Random);
            continue;
        }
        let bytes = hex::decode(&item)
            .ok()
            .filter(|b| !b.is_empty() && b.len() <= 64);
        match bytes {
            Some(bytes) => passes.push(Pattern::Constant(bytes)),
            None => return Err(crate::usage::usage(format!(
                "custom pass `{item}` is neither `random` nor 1-64 hex bytes (e.g. custom:00,ff,random,55aa)"
            ))),
        }
    }
    if passes.is_empty() {
        return Err(crate::usage::usage(
            "custom: needs at least one pass, e.g. custom:00,ff,random",
        ));
    }
    Ok(passes)
}

/// Expands a method name into its passes (`--passes` rounds, then the optional blank pass)
/// and marks which are verified.
pub fn plan(
    method: &str,
    verify: VerifyMode,
    rounds: u32,
    blank: bool,
) -> anyhow::Result<WipePlan> {
    if rounds == 0 {
        return Err(crate::usage::usage("--passes must be at least 1"));
    }
    // Passes a method always verifies, whatever --verify says (index within one round).
    let mut always_verified: Vec<usize> = Vec::new();
    let base: Vec<Pattern> = match method {
        "zero" => vec![c(&[0x00])],
        "one" => vec![c(&[0xff])],
        "random" => vec![Pattern::Random],
        "nist-clear" => {
            always_verified.push(0);
            vec![Pattern::Random]
        }
        "dod-3" => {
            let r = random_byte();
            vec![c(&[r]), c(&[!r]), Pattern::Random]
        }
        "dod-7" => {
            let (r1, r2, r3) = (random_byte(), random_byte(), random_byte());
            vec![c(&[r1]), c(&[!r1]), Pattern::Random, c(&[r2]), c(&[r3]), c(&[!r3]), Pattern::Random]
        }
        "hmg-is5" => {
            always_verified.push(2);
            vec![c(&[0x00]), c(&[0xff]), Pattern::Random]
        }
        "gutmann" => gutmann(),
        other => match other.strip_prefix("custom:") {
            Some(list) => custom(list)?,
            None => return Err(crate::usage::usage(format!(
                "unknown method `{other}`: use zero, one, random, nist-clear, dod-3, dod-7, hmg-is5, gutmann or custom:PASSES"
            ))),
        },
    };
    let mut passes = Vec::new();
    for _ in 0..rounds {
        for (i, pattern) in base.iter().enumerate() {
            passes.push(PassPlan {
                pattern: pattern.clone(),
                verify: verify == VerifyMode::All || always_verified.contains(&i),
            });
        }
    }
    if blank {
        passes.push(PassPlan {
            pattern: c(&[0x00]),
            verify: verify == VerifyMode::All,
        });
    }
    if verify == VerifyMode::Last {
        if let Some(last) = passes.last_mut() {
            last.verify = true;
        }
    }
    Ok(WipePlan {
        method: method.to_string(),
        passes,
        rounds,
        blank,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(p: &WipePlan) -> Vec<String> {
        p.passes.iter().map(|p| p.pattern.label()).collect()
    }

    #[test]
    fn pass_lists() {
        assert_eq!(
            labels(&plan("zero", VerifyMode::Last, 1, false).unwrap()),
            ["00"]
        );
        assert_eq!(
            labels(&plan("one", VerifyMode::Last, 1, true).unwrap()),
            ["ff", "00"]
        );
        assert_eq!(
            labels(&plan("hmg-is5", VerifyMode::None, 1, false).unwrap()),
            ["00", "ff", "random"]
        );
        let dod = plan("dod-3", VerifyMode::Last, 1, false).unwrap();
        match (&dod.passes[0].pattern, &dod.passes[1].pattern) {
            (Pattern::Constant(a), Pattern::Constant(b)) => assert_eq!(a[0], !b[0]),
            _ => panic!("dod-3 starts with a byte and its complement"),
        }
        let dod7 = plan("dod-7", VerifyMode::Last, 1, false).unwrap();
        assert_eq!(dod7.passes.len(), 7);
        let g = plan("gutmann", VerifyMode::Last, 1, false).unwrap();
        assert_eq!(g.passes.len(), 35);
        assert!(g.passes[..4]
            .iter()
            .chain(&g.passes[31..])
            .all(|p| p.pattern == Pattern::Random));
        assert!(g.passes[4..31].iter().all(|p| p.pattern != Pattern::Random));
        assert_eq!(
            labels(&plan("custom:00,FF,random,55aa", VerifyMode::Last, 2, false).unwrap()),
            ["00", "ff", "random", "55aa", "00", "ff", "random", "55aa"]
        );
        assert!(plan("custom:0g", VerifyMode::Last, 1, false).is_err());
        assert!(plan("dod", VerifyMode::Last, 1, false).is_err());
    }

    #[test]
    fn verification_choice() {
        let v: Vec<bool> = plan("hmg-is5", VerifyMode::None, 1, false)
            .unwrap()
            .passes
            .iter()
            .map(|p| p.verify)
            .collect();
        assert_eq!(v, [false, false, true]);
        let v: Vec<bool> = plan("dod-3", VerifyMode::Last, 1, true)
            .unwrap()
            .passes
            .iter()
            .map(|p| p.verify)
            .collect();
        assert_eq!(v, [false, false, false, true]);
        assert!(plan("zero", VerifyMode::All, 2, false)
            .unwrap()
            .passes
            .iter()
            .all(|p| p.verify));
        assert!(
            plan("nist-clear", VerifyMode::None, 1, false)
                .unwrap()
                .passes[0]
                .verify
        );
    }
}

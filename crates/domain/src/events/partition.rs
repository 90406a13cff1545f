//! The partition of a run: which `{ev:<p>}` hash tag its event keys carry (ADR 0017), so
//! that every key one ingest touches stays in one Redis Cluster slot and workers divide the
//! runs by partition.

use crate::ids::RunId;

/// The partition of `run` among `partitions` (0 counts as 1): the UUID's two 64-bit halves
/// folded by xor and mixed by `SplitMix64`'s finalizer, modulo `partitions`.
///
/// Stable across versions, nodes and platforms (persisted keys and leased partitions depend
/// on it: never change it), and uniform although a UUIDv7 begins with a timestamp.
pub fn partition(run: RunId, partitions: u16) -> u16 {
    let bits = run.as_uuid().as_u128();
    #[allow(clippy::cast_possible_truncation, reason = "the two halves, on purpose")]
    let folded = (bits >> 64) as u64 ^ bits as u64;
    let slot = splitmix64_finalize(folded) % u64::from(partitions.max(1));
    u16::try_from(slot).unwrap_or(0)
}

/// `SplitMix64`'s output function (Steele, Lea, Flood 2014): a bijection on `u64` that spreads
/// every input bit over the whole output.
const fn splitmix64_finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn run(text: &str) -> RunId {
        RunId::from_uuid(Uuid::parse_str(text).unwrap())
    }

    #[test]
    fn partitions_are_pinned() {
        // Computed independently (Python, the same three steps); all-zero and all-one ids
        // both fold to 0.
        let pinned = [
            ("00000000-0000-0000-0000-000000000000", 16, 0),
            ("0192f1d2-8a3b-7c4d-9e5f-60718293a4b5", 16, 15),
            ("0192f1d2-8a3b-7c4d-9e5f-60718293a4b6", 16, 8),
            ("ffffffff-ffff-ffff-ffff-ffffffffffff", 16, 0),
            ("0192f1d2-8a3b-7c4d-9e5f-60718293a4b5", 1000, 335),
        ];
        for (id, partitions, expected) in pinned {
            assert_eq!(partition(run(id), partitions), expected, "{id} among {partitions}");
        }
    }

    #[test]
    fn one_or_zero_partitions_put_every_run_in_partition_zero() {
        let id = RunId::from_uuid(Uuid::now_v7());
        assert_eq!(partition(id, 1), 0);
        assert_eq!(partition(id, 0), 0);
    }

    #[test]
    fn uuid_v7_runs_spread_evenly_over_sixteen_partitions() {
        const RUNS: usize = 100_000;
        let mut counts = [0_usize; 16];
        for _ in 0..RUNS {
            counts[usize::from(partition(RunId::from_uuid(Uuid::now_v7()), 16))] += 1;
        }
        let mean = RUNS / counts.len();
        for (p, &count) in counts.iter().enumerate() {
            assert!(
                count.abs_diff(mean) * 10 <= mean,
                "partition {p} holds {count} runs, mean {mean}: {counts:?}"
            );
        }
    }
}

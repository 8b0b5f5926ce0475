//! How many chunks a process-pool worker may owe at once: the supervisor's
//! [`DepthGauge`], judged from how long recent chunks kept workers busy.

/// Work a worker should have queued ahead of it, in microseconds: enough that a collector
/// away for a moment (a caller busy in Python, an interpreter pause) leaves no worker idle.
pub const BUFFERED_MICROS: f64 = 2_000.0;
/// What a chunk costs beyond the worker's own clock (ring, wake-up, bookkeeping).
const CHUNK_OVERHEAD_MICROS: f64 = 10.0;
/// The most chunks a worker may owe, however short they are.
pub const MAX_DEPTH: usize = 64;

/// How many chunks a worker may owe: [`BUFFERED_MICROS`] worth of them, judged from how
/// long recent chunks kept workers busy, between the pool's own depth and [`MAX_DEPTH`].
///
/// Tiny chunks (single calls of a quick function) then queue deep enough that the workers
/// never wait for the parent; long ones keep the pool's depth, so that a chunk never waits
/// behind a slow one while another worker is idle. The mean follows a rise at once and
/// a fall slowly: misjudging long chunks as short costs more than the reverse.
#[derive(Debug, Clone)]
pub struct DepthGauge {
    least: usize,
    most: usize,
    mean_micros: Option<f64>,
}

impl DepthGauge {
    /// A gauge that never goes below `least` (at least 1).
    pub fn new(least: usize) -> Self {
        let least = least.max(1);
        DepthGauge {
            least,
            most: MAX_DEPTH.max(least),
            mean_micros: None,
        }
    }

    /// A gauge that stays at `depth` (at least 1), however long chunks take: with 1, a
    /// worker is given its next chunk only once it has answered the last, so no chunk
    /// ever waits behind a slow one.
    pub fn fixed(depth: usize) -> Self {
        let depth = depth.max(1);
        DepthGauge {
            least: depth,
            most: depth,
            mean_micros: None,
        }
    }

    /// Records that a chunk kept its worker busy for `busy_micros`.
    pub fn observe(&mut self, busy_micros: u64) {
        let sample = busy_micros as f64;
        self.mean_micros = Some(match self.mean_micros {
            None => sample,
            Some(mean) if sample > mean => sample,
            Some(mean) => mean + 0.1 * (sample - mean),
        });
    }

    /// Whether chunks are short enough that workers queue more than the pool's depth.
    pub fn is_deep(&self) -> bool {
        self.depth() > self.least
    }

    /// The number of chunks a worker may owe now.
    pub fn depth(&self) -> usize {
        let Some(mean) = self.mean_micros else {
            return self.least;
        };
        let fits = BUFFERED_MICROS / (mean + CHUNK_OVERHEAD_MICROS);
        // `as` saturates a float: a huge quotient becomes usize::MAX, then the cap.
        (fits as usize).clamp(self.least, self.most)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_starts_at_the_pools_own() {
        assert_eq!(DepthGauge::new(2).depth(), 2);
        assert_eq!(DepthGauge::new(0).depth(), 1);
        let mut fixed = DepthGauge::fixed(1);
        fixed.observe(1);
        assert_eq!(
            fixed.depth(),
            1,
            "a fixed gauge ignores how short chunks are"
        );
    }

    #[test]
    fn short_chunks_queue_deeper_up_to_the_cap() {
        let mut gauge = DepthGauge::new(2);
        gauge.observe(5);
        assert_eq!(gauge.depth(), MAX_DEPTH);
        let mut gauge = DepthGauge::new(2);
        gauge.observe(190);
        assert_eq!(gauge.depth(), 10);
    }

    #[test]
    fn long_chunks_keep_the_pools_depth_and_a_rise_counts_at_once() {
        let mut gauge = DepthGauge::new(2);
        for _ in 0..100 {
            gauge.observe(3);
        }
        assert_eq!(gauge.depth(), MAX_DEPTH);
        gauge.observe(20_000);
        assert_eq!(gauge.depth(), 2);
        // A fall is believed only slowly.
        gauge.observe(3);
        assert_eq!(gauge.depth(), 2);
        for _ in 0..200 {
            gauge.observe(3);
        }
        assert_eq!(gauge.depth(), MAX_DEPTH);
    }
}

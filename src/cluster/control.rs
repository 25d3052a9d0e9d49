//! The cluster's control plane, a small dataflow beside the topology on
//! every worker:
//!
//! - **Durability.** Each worker advances its durability input to the
//!   boundary of its process's newest durable checkpoint; timely's progress
//!   tracking makes the probe's frontier the minimum over every worker of
//!   every process: the boundary durable everywhere, the only one whose
//!   offsets may be committed.
//! - **Halting.** A worker asked to stop (SIGTERM, `Running::stop`) says at
//!   which epoch its input stands; every worker hearing that stops reading
//!   and says the same. Once all have spoken, the stop epoch is the largest:
//!   no worker has sent anything at or after it, so a checkpoint there holds
//!   everything read, and every process stops at the same place.

use std::cell::RefCell;
use std::rc::Rc;

use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::Inspect;
use timely::dataflow::operators::{Input, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle};
use timely::worker::Worker;

/// A worker's word that it halted: `(worker, epoch its input stands at)`.
pub type Halt = (usize, u64);

/// One worker's end of the control plane.
pub struct Control {
    durable_in: InputHandleVec<u64, ()>,
    durable: ProbeHandle<u64>,
    halts_in: InputHandleVec<u64, Halt>,
    heard: Rc<RefCell<Vec<Halt>>>,
    halted: bool,
    peers: usize,
}

impl Control {
    /// Builds the control dataflow on `worker`.
    pub fn build(worker: &mut Worker) -> Control {
        let heard = Rc::new(RefCell::new(Vec::new()));
        let peers = worker.peers();
        let (durable_in, durable, halts_in) = worker.dataflow::<u64, _, _>(|scope| {
            let (durable_in, durable) = scope.new_input::<Vec<()>>();
            let (durable, _) = durable.probe();
            let (halts_in, halts) = scope.new_input::<Vec<Halt>>();
            let sink = heard.clone();
            halts
                .broadcast()
                .inspect(move |halt: &Halt| sink.borrow_mut().push(*halt));
            (durable_in, durable, halts_in)
        });
        Control {
            durable_in,
            durable,
            halts_in,
            heard,
            halted: false,
            peers,
        }
    }

    /// This worker's process has every checkpoint up to `boundary` durable.
    pub fn durable_here(&mut self, boundary: u64) {
        if boundary > *self.durable_in.time() {
            self.durable_in.advance_to(boundary);
        }
    }

    /// The newest boundary durable on every process.
    pub fn durable_everywhere(&self) -> Option<u64> {
        self.durable
            .with_frontier(|frontier| frontier.first().copied())
            .filter(|boundary| *boundary > 0)
    }

    /// Whether any worker of the cluster halted.
    pub fn stop_heard(&self) -> bool {
        !self.heard.borrow().is_empty()
    }

    /// Whether this worker halted.
    pub fn halted(&self) -> bool {
        self.halted
    }

    /// Halts this worker (`index`) with its input at `epoch`: it reads no
    /// more and waits for [`stop_epoch`](Self::stop_epoch).
    pub fn halt(&mut self, index: usize, epoch: u64) {
        if !self.halted {
            self.halted = true;
            self.halts_in.send((index, epoch));
            self.halts_in.flush();
        }
    }

    /// Once every worker halted: the epoch all stop at, one past the
    /// latest halt. Past it, so that no operator's frontier can have
    /// reached it before its process asked for a checkpoint there: an
    /// operator that met the frontier at the boundary before the ask would
    /// never be scheduled again to save it, and the stop would wait forever.
    pub fn stop_epoch(&self) -> Option<u64> {
        let heard = self.heard.borrow();
        let mut workers: Vec<usize> = heard.iter().map(|(worker, _)| *worker).collect();
        workers.sort_unstable();
        workers.dedup();
        (workers.len() == self.peers)
            .then(|| heard.iter().map(|(_, epoch)| *epoch + 1).max())
            .flatten()
    }
}

//! The processes' handshake at start: each says who it is, and every
//! worker of every process derives the same [`Agreement`] from what all said.

use std::cell::RefCell;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::Inspect;
use timely::dataflow::operators::{Input, Probe};
use timely::worker::Worker;

/// What one process says of itself at start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The process, from 0.
    pub process: usize,
    /// Where its HTTP API answers (`host:port`), for forwarding reads.
    pub http: Option<String>,
    /// The run it proposes (its start in Unix milliseconds, after the
    /// newest run of its checkpoints).
    pub run: u64,
    /// The checkpoints it can resume from (directory names, which sort
    /// oldest first).
    pub checkpoints: Vec<String>,
}

/// What every process agrees on after the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agreement {
    /// Every process's hello, by process.
    pub hellos: Vec<Hello>,
    /// The run: the newest proposed (so it names checkpoints after any before).
    pub run: u64,
    /// The newest checkpoint every process can resume from, if any.
    pub resume: Option<String>,
}

impl Agreement {
    /// The agreement of these hellos.
    ///
    /// ```
    /// use feedstorm::cluster::hello::{Agreement, Hello};
    /// let hello = |process, run, checkpoints: &[&str]| Hello {
    ///     process,
    ///     http: None,
    ///     run,
    ///     checkpoints: checkpoints.iter().map(|c| c.to_string()).collect(),
    /// };
    /// let agreed = Agreement::of(vec![hello(1, 7, &["a", "b"]), hello(0, 9, &["a", "b", "c"])]);
    /// assert_eq!((agreed.run, agreed.resume.as_deref()), (9, Some("b")));
    /// assert_eq!(agreed.hellos[0].process, 0);
    /// ```
    pub fn of(mut hellos: Vec<Hello>) -> Agreement {
        hellos.sort_by_key(|h| h.process);
        let run = hellos.iter().map(|h| h.run).max().unwrap_or(0);
        let resume = hellos.first().and_then(|first| {
            first
                .checkpoints
                .iter()
                .filter(|c| hellos.iter().all(|h| h.checkpoints.contains(c)))
                .max()
                .cloned()
        });
        Agreement {
            hellos,
            run,
            resume,
        }
    }

    /// The HTTP address of process `process`.
    pub fn http_of(&self, process: usize) -> Option<&str> {
        self.hellos.get(process)?.http.as_deref()
    }
}

/// Exchanges hellos among all processes: each process's first worker gives
/// `mine`, every worker gets all of them. Blocks until every process has
/// spoken (timely has connected them all already).
pub fn exchange(worker: &mut Worker, mine: Option<Hello>) -> Agreement {
    let heard = Rc::new(RefCell::new(Vec::new()));
    let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
        let (input, stream) = scope.new_input::<Vec<Hello>>();
        let sink = heard.clone();
        let (probe, _) = stream
            .broadcast()
            .inspect(move |hello: &Hello| sink.borrow_mut().push(hello.clone()))
            .probe();
        (input, probe)
    });
    if let Some(hello) = mine {
        input.send(hello);
    }
    drop(input);
    while !probe.done() {
        worker.step();
    }
    let hellos = std::mem::take(&mut *heard.borrow_mut());
    Agreement::of(hellos)
}

//! Bounded, zeroizing byte pipes between threads. They let reading, encryption and writing run
//! on different cores (a 2-core laptop doing the crypto on one core and the disk writes on the
//! other), while memory stays flat: at most a handful of 1 MiB buffers exist per pipe.

use std::io::{self, Read, Write};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::thread::JoinHandle;

use zeroize::Zeroizing;

/// Size of one buffer moved through a pipe.
pub(crate) const BUFFER_SIZE: usize = 1 << 20;
/// Filled buffers that may wait in a pipe.
const DEPTH: usize = 4;

type Buffer = Zeroizing<Vec<u8>>;

enum Message {
    Data(Buffer),
    End,
}

/// The sending half of a pipe.
pub(crate) struct PipeWriter {
    full: SyncSender<Message>,
    empty: Receiver<Buffer>,
    current: Buffer,
}

/// The receiving half of a pipe. Ends with EOF only if the writer called [`PipeWriter::finish`];
/// a writer that was dropped (its thread failed) makes reads fail.
pub(crate) struct PipeReader {
    full: Receiver<Message>,
    empty: SyncSender<Buffer>,
    current: Buffer,
    pos: usize,
    ended: bool,
}

/// Creates a pipe.
pub(crate) fn pipe() -> (PipeWriter, PipeReader) {
    let (full_tx, full_rx) = mpsc::sync_channel(DEPTH);
    let (empty_tx, empty_rx) = mpsc::sync_channel(DEPTH + 2);
    (
        PipeWriter {
            full: full_tx,
            empty: empty_rx,
            current: new_buffer(),
        },
        PipeReader {
            full: full_rx,
            empty: empty_tx,
            current: Zeroizing::new(Vec::new()),
            pos: 0,
            ended: false,
        },
    )
}

fn new_buffer() -> Buffer {
    Zeroizing::new(Vec::with_capacity(BUFFER_SIZE))
}

/// Marks the error a pipe end reports when the other end went away (its thread failed); the
/// other thread's own error is the one to show.
#[derive(Debug, thiserror::Error)]
#[error("the other end of the pipe stopped")]
pub(crate) struct PipeClosed;

fn consumer_gone() -> io::Error {
    io::Error::other(PipeClosed)
}

impl PipeWriter {
    fn send_current(&mut self) -> io::Result<()> {
        let next = match self.empty.try_recv() {
            Ok(buf) => buf,
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => new_buffer(),
        };
        let full = std::mem::replace(&mut self.current, next);
        self.full
            .send(Message::Data(full))
            .map_err(|_| consumer_gone())
    }

    /// Sends what is left and the end-of-stream mark.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        if !self.current.is_empty() {
            self.send_current()?;
        }
        self.full.send(Message::End).map_err(|_| consumer_gone())
    }
}

impl Write for PipeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = BUFFER_SIZE - self.current.len();
        let n = room.min(buf.len());
        self.current.extend_from_slice(&buf[..n]);
        if self.current.len() == BUFFER_SIZE {
            self.send_current()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl PipeReader {
    /// Takes the next filled buffer, or `None` at the end of the stream.
    fn next_buffer(&mut self) -> io::Result<Option<Buffer>> {
        if self.ended {
            return Ok(None);
        }
        match self.full.recv() {
            Ok(Message::Data(buf)) => Ok(Some(buf)),
            Ok(Message::End) => {
                self.ended = true;
                Ok(None)
            }
            Err(_) => Err(io::Error::other(PipeClosed)),
        }
    }

    fn recycle(&mut self, mut buf: Buffer) {
        buf.clear();
        // A full free list just means the buffer is dropped (and zeroized).
        let _ = self.empty.try_send(buf);
    }
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.pos == self.current.len() {
            match self.next_buffer()? {
                Some(buf) => {
                    let old = std::mem::replace(&mut self.current, buf);
                    self.recycle(old);
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = (self.current.len() - self.pos).min(out.len());
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A writer whose writes happen on a thread of its own, so the caller's thread keeps
/// encrypting or decrypting while the disk catches up.
pub(crate) struct ThreadedWriter<W: Write + Send + 'static> {
    pipe: Option<PipeWriter>,
    thread: Option<JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> ThreadedWriter<W> {
    /// Starts the writing thread.
    pub(crate) fn new(mut output: W) -> io::Result<Self> {
        let (pipe, mut reader) = pipe();
        let thread = std::thread::Builder::new()
            .name("safehand-writer".into())
            .spawn(move || -> io::Result<W> {
                while let Some(buf) = reader.next_buffer()? {
                    output.write_all(&buf)?;
                    reader.recycle(buf);
                }
                output.flush()?;
                Ok(output)
            })?;
        Ok(Self {
            pipe: Some(pipe),
            thread: Some(thread),
        })
    }

    /// The writing thread's own error, once it has stopped.
    fn thread_error(&mut self) -> io::Error {
        self.pipe = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            _ => io::Error::other("the writing thread stopped"),
        }
    }

    /// Writes what is buffered, waits for the thread and gives the output back.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        let pipe = self
            .pipe
            .take()
            .ok_or_else(|| io::Error::other("already finished"))?;
        if let Err(e) = pipe.finish() {
            let real = self.thread_error();
            return Err(if real.kind() == io::ErrorKind::Other {
                e
            } else {
                real
            });
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            _ => Err(io::Error::other("the writing thread stopped")),
        }
    }
}

impl<W: Write + Send + 'static> Write for ThreadedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let result = match self.pipe.as_mut() {
            Some(pipe) => pipe.write(buf),
            None => return Err(io::Error::other("the writing thread stopped")),
        };
        result.map_err(|_| self.thread_error())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for ThreadedWriter<W> {
    fn drop(&mut self) {
        // Dropping the pipe without `End` makes the thread stop with an error; wait for it so
        // the output (e.g. a temporary file) is dropped and cleaned up before we return.
        self.pipe = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_moves_every_byte_in_order() {
        let data: Vec<u8> = (0..5 * BUFFER_SIZE + 123)
            .map(|i| (i % 251) as u8)
            .collect();
        let (mut w, mut r) = pipe();
        let expected = data.clone();
        let t = std::thread::spawn(move || {
            w.write_all(&data).unwrap();
            w.finish().unwrap();
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        t.join().unwrap();
        assert_eq!(got, expected);
    }

    #[test]
    fn a_writer_that_dies_makes_the_reader_fail_not_end() {
        let (mut w, mut r) = pipe();
        w.write_all(b"partial").unwrap();
        drop(w);
        let mut got = Vec::new();
        assert!(r.read_to_end(&mut got).is_err());
    }

    #[test]
    fn threaded_writer_returns_the_output() {
        let mut tw = ThreadedWriter::new(Vec::new()).unwrap();
        tw.write_all(&vec![7u8; 3 * BUFFER_SIZE + 5]).unwrap();
        let out = tw.finish().unwrap();
        assert_eq!(out.len(), 3 * BUFFER_SIZE + 5);
        assert!(out.iter().all(|&b| b == 7));
    }
}

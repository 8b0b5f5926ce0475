//! Putting a message back together from the pieces a ring hands over.

use super::Frame;
use crate::error::{Error, Result};

/// What one record did to an [`Assembler`].
#[derive(Debug)]
pub enum Fed<'a> {
    /// A message in one piece, lent in place.
    Whole(Frame, &'a [u8]),
    /// The last piece of a message, put together.
    Joined(Frame, Vec<u8>),
    /// A piece of a message that is not complete yet.
    Partial,
}

impl Fed<'_> {
    /// Lends a completed message to `f`; `None` for a partial one.
    pub fn complete<R>(self, f: impl FnOnce(Frame, &[u8]) -> R) -> Option<R> {
        match self {
            Fed::Whole(frame, body) => Some(f(frame, body)),
            Fed::Joined(frame, body) => Some(f(frame, &body)),
            Fed::Partial => None,
        }
    }
}

/// Puts pieces back together. Feed it every record of one ring, in order.
#[derive(Debug, Default)]
pub struct Assembler {
    partial: Option<(Frame, Vec<u8>)>,
}

impl Assembler {
    /// Takes one record; returns the message it completes, if any.
    pub fn feed(&mut self, record: &[u8]) -> Result<Option<(Frame, Vec<u8>)>> {
        Ok(self.feed_in_place(record)?.complete(|f, b| (f, b.to_vec())))
    }

    /// Takes one record; a message that came in one piece is lent in place, so it is
    /// copied only by whoever keeps it.
    pub fn feed_in_place<'a>(&mut self, record: &'a [u8]) -> Result<Fed<'a>> {
        let (frame, more, body) = Frame::decode(record)?;
        let Some((first, bytes)) = self.partial.as_mut() else {
            if more {
                self.partial = Some((frame, body.to_vec()));
                return Ok(Fed::Partial);
            }
            return Ok(Fed::Whole(frame, body));
        };
        if *first != frame {
            return Err(Error::Corrupt(format!(
                "a piece of {frame:?} inside message {first:?}"
            )));
        }
        bytes.extend_from_slice(body);
        if more {
            return Ok(Fed::Partial);
        }
        match self.partial.take() {
            Some((frame, bytes)) => Ok(Fed::Joined(frame, bytes)),
            None => Ok(Fed::Partial),
        }
    }
}

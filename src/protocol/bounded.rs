//! The binary protocol's reading side with a bound on a request's size.
//!
//! Hand-written around the thrift crate's `TBinaryInputProtocol` (which does everything else)
//! for one measured reason: it allocates the length a string announces before reading it, so
//! one request announcing a 1 GiB string made the server allocate as the bytes arrived (eight
//! connections sending 8 MiB each grew the RSS by 66 MiB), and a list announcing 2^31
//! elements makes the generated code reserve that many before reading one. Here every length
//! and element count is checked against what is left of the request's budget before anything
//! is allocated; osquery's requests are a few KiB.

use std::io::Read;

use thrift::protocol::{
    TBinaryInputProtocol, TFieldIdentifier, TInputProtocol, TListIdentifier, TMapIdentifier,
    TMessageIdentifier, TMessageType, TSetIdentifier, TStructIdentifier,
};
use thrift::{ProtocolError, ProtocolErrorKind};

/// The largest request read (16 MiB).
pub const MAX_REQUEST: usize = 16 << 20;

/// A reader that fails once more than its budget has been read.
pub struct Budget<R> {
    inner: R,
    left: usize,
}

impl<R: Read> Read for Budget<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 && !buf.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "request larger than the bound",
            ));
        }
        let n = buf.len().min(self.left);
        let got = self.inner.read(&mut buf[..n])?;
        self.left -= got;
        Ok(got)
    }
}

fn too_large(what: &str, len: i64) -> thrift::Error {
    thrift::Error::Protocol(ProtocolError::new(
        ProtocolErrorKind::SizeLimit,
        format!("{what} of {len} exceeds what is left of the {MAX_REQUEST}-byte request bound"),
    ))
}

/// Strict binary protocol input whose every message is bounded by `limit` bytes.
pub struct BoundedInput<R: Read> {
    inner: TBinaryInputProtocol<Budget<R>>,
    limit: usize,
}

impl<R: Read> BoundedInput<R> {
    pub fn new(reader: R, limit: usize) -> Self {
        BoundedInput {
            inner: TBinaryInputProtocol::new(
                Budget {
                    inner: reader,
                    left: limit,
                },
                true,
            ),
            limit,
        }
    }

    fn left(&self) -> usize {
        self.inner.transport.left
    }

    /// A length or element count, refused when more than the rest of the budget could hold
    /// (every element takes at least one byte).
    fn check(&self, what: &str, n: i32) -> thrift::Result<usize> {
        match usize::try_from(n) {
            Ok(len) if len <= self.left() => Ok(len),
            _ => Err(too_large(what, i64::from(n))),
        }
    }
}

impl<R: Read> TInputProtocol for BoundedInput<R> {
    /// Also starts the next message's budget.
    fn read_message_begin(&mut self) -> thrift::Result<TMessageIdentifier> {
        self.inner.transport.left = self.limit;
        let header = self.inner.read_i32()? as u32;
        if header & 0xffff_0000 != 0x8001_0000 {
            return Err(thrift::Error::Protocol(ProtocolError::new(
                ProtocolErrorKind::BadVersion,
                format!("not a strict binary-protocol message (header {header:#010x})"),
            )));
        }
        let message_type = TMessageType::try_from((header & 0xff) as u8)?;
        let name = self.read_string()?;
        let sequence_number = self.inner.read_i32()?;
        Ok(TMessageIdentifier::new(name, message_type, sequence_number))
    }
    fn read_message_end(&mut self) -> thrift::Result<()> {
        self.inner.read_message_end()
    }
    fn read_struct_begin(&mut self) -> thrift::Result<Option<TStructIdentifier>> {
        self.inner.read_struct_begin()
    }
    fn read_struct_end(&mut self) -> thrift::Result<()> {
        self.inner.read_struct_end()
    }
    fn read_field_begin(&mut self) -> thrift::Result<TFieldIdentifier> {
        self.inner.read_field_begin()
    }
    fn read_field_end(&mut self) -> thrift::Result<()> {
        self.inner.read_field_end()
    }
    fn read_bool(&mut self) -> thrift::Result<bool> {
        self.inner.read_bool()
    }
    fn read_bytes(&mut self) -> thrift::Result<Vec<u8>> {
        let n = self.inner.read_i32()?;
        let len = self.check("a string", n)?;
        let mut buf = vec![0u8; len];
        self.inner.transport.read_exact(&mut buf)?;
        Ok(buf)
    }
    fn read_i8(&mut self) -> thrift::Result<i8> {
        self.inner.read_i8()
    }
    fn read_i16(&mut self) -> thrift::Result<i16> {
        self.inner.read_i16()
    }
    fn read_i32(&mut self) -> thrift::Result<i32> {
        self.inner.read_i32()
    }
    fn read_i64(&mut self) -> thrift::Result<i64> {
        self.inner.read_i64()
    }
    fn read_double(&mut self) -> thrift::Result<f64> {
        self.inner.read_double()
    }
    fn read_string(&mut self) -> thrift::Result<String> {
        Ok(String::from_utf8(self.read_bytes()?)?)
    }
    fn read_list_begin(&mut self) -> thrift::Result<TListIdentifier> {
        let id = self.inner.read_list_begin()?;
        self.check("a list", id.size)?;
        Ok(id)
    }
    fn read_list_end(&mut self) -> thrift::Result<()> {
        self.inner.read_list_end()
    }
    fn read_set_begin(&mut self) -> thrift::Result<TSetIdentifier> {
        let id = self.inner.read_set_begin()?;
        self.check("a set", id.size)?;
        Ok(id)
    }
    fn read_set_end(&mut self) -> thrift::Result<()> {
        self.inner.read_set_end()
    }
    fn read_map_begin(&mut self) -> thrift::Result<TMapIdentifier> {
        let id = self.inner.read_map_begin()?;
        self.check("a map", id.size)?;
        Ok(id)
    }
    fn read_map_end(&mut self) -> thrift::Result<()> {
        self.inner.read_map_end()
    }
    fn read_byte(&mut self) -> thrift::Result<u8> {
        self.inner.read_byte()
    }
}

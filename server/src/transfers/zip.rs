//! A streaming ZIP writer for "download all": entries stored (files are sent as they are),
//! sizes and CRC-32 in a data descriptor after each entry, ZIP64 records throughout so that
//! files and archives over 4 GiB work (APPNOTE 6.3.x, sections 4.3 and 4.5.3). Output is
//! produced piece by piece into a caller's buffer; nothing is held but the central directory.

/// One entry's record for the central directory.
#[derive(Debug)]
struct Entry {
    name: Vec<u8>,
    crc: u32,
    size: u64,
    offset: u64,
}

/// Writes a ZIP archive as a stream.
#[derive(Debug)]
pub struct ZipStream {
    entries: Vec<Entry>,
    written: u64,
    crc: crc32fast::Hasher,
    current: Option<(Vec<u8>, u64, u64)>,
    dos_time: u16,
    dos_date: u16,
}

const VERSION: u16 = 45;
const FLAGS: u16 = 0x0008 | 0x0800; // data descriptor; UTF-8 names

impl ZipStream {
    /// A new archive whose entries carry the time `unix` (UTC).
    pub fn new(unix: i64) -> Self {
        let t = time::OffsetDateTime::from_unix_timestamp(unix)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let year = (t.year() - 1980).clamp(0, 127) as u16;
        Self {
            entries: Vec::new(),
            written: 0,
            crc: crc32fast::Hasher::new(),
            current: None,
            dos_time: ((t.hour() as u16) << 11)
                | ((t.minute() as u16) << 5)
                | (t.second() as u16 / 2),
            dos_date: (year << 9) | ((u8::from(t.month()) as u16) << 5) | t.day() as u16,
        }
    }

    fn put(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(bytes);
        self.written += bytes.len() as u64;
    }

    /// Starts an entry called `name`.
    pub fn begin(&mut self, name: &str, out: &mut Vec<u8>) {
        let name = name.as_bytes().to_vec();
        let mut h = Vec::with_capacity(30 + name.len() + 20);
        h.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        h.extend_from_slice(&VERSION.to_le_bytes());
        h.extend_from_slice(&FLAGS.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes()); // stored
        h.extend_from_slice(&self.dos_time.to_le_bytes());
        h.extend_from_slice(&self.dos_date.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes()); // CRC in the descriptor
        h.extend_from_slice(&u32::MAX.to_le_bytes()); // sizes in ZIP64 fields
        h.extend_from_slice(&u32::MAX.to_le_bytes());
        h.extend_from_slice(&(name.len() as u16).to_le_bytes());
        h.extend_from_slice(&20u16.to_le_bytes());
        h.extend_from_slice(&name);
        h.extend_from_slice(&1u16.to_le_bytes()); // ZIP64 extra field
        h.extend_from_slice(&16u16.to_le_bytes());
        h.extend_from_slice(&0u64.to_le_bytes());
        h.extend_from_slice(&0u64.to_le_bytes());
        let offset = self.written;
        self.put(out, &h);
        self.crc = crc32fast::Hasher::new();
        self.current = Some((name, offset, 0));
    }

    /// Content of the current entry.
    pub fn data(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.crc.update(bytes);
        if let Some((_, _, size)) = &mut self.current {
            *size += bytes.len() as u64;
        }
        self.put(out, bytes);
    }

    /// Ends the current entry with its data descriptor.
    pub fn end(&mut self, out: &mut Vec<u8>) {
        let Some((name, offset, size)) = self.current.take() else {
            return;
        };
        let crc = std::mem::take(&mut self.crc).finalize();
        let mut d = Vec::with_capacity(24);
        d.extend_from_slice(&0x0807_4b50u32.to_le_bytes());
        d.extend_from_slice(&crc.to_le_bytes());
        d.extend_from_slice(&size.to_le_bytes());
        d.extend_from_slice(&size.to_le_bytes());
        self.put(out, &d);
        self.entries.push(Entry {
            name,
            crc,
            size,
            offset,
        });
    }

    /// Writes the central directory and the end records.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        self.end(out);
        let cd_start = self.written;
        let entries = std::mem::take(&mut self.entries);
        for e in &entries {
            let mut c = Vec::with_capacity(46 + e.name.len() + 28);
            c.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            c.extend_from_slice(&(0x0300 | VERSION).to_le_bytes()); // made by: Unix
            c.extend_from_slice(&VERSION.to_le_bytes());
            c.extend_from_slice(&FLAGS.to_le_bytes());
            c.extend_from_slice(&0u16.to_le_bytes());
            c.extend_from_slice(&self.dos_time.to_le_bytes());
            c.extend_from_slice(&self.dos_date.to_le_bytes());
            c.extend_from_slice(&e.crc.to_le_bytes());
            c.extend_from_slice(&u32::MAX.to_le_bytes());
            c.extend_from_slice(&u32::MAX.to_le_bytes());
            c.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            c.extend_from_slice(&28u16.to_le_bytes());
            c.extend_from_slice(&0u16.to_le_bytes()); // comment
            c.extend_from_slice(&0u16.to_le_bytes()); // disk
            c.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
            c.extend_from_slice(&(0o100_600u32 << 16).to_le_bytes()); // a private regular file
            c.extend_from_slice(&u32::MAX.to_le_bytes());
            c.extend_from_slice(&e.name);
            c.extend_from_slice(&1u16.to_le_bytes());
            c.extend_from_slice(&24u16.to_le_bytes());
            c.extend_from_slice(&e.size.to_le_bytes());
            c.extend_from_slice(&e.size.to_le_bytes());
            c.extend_from_slice(&e.offset.to_le_bytes());
            self.put(out, &c);
        }
        let cd_size = self.written - cd_start;
        let eocd64 = self.written;
        let n = entries.len() as u64;
        let mut z = Vec::with_capacity(56 + 20 + 22);
        z.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
        z.extend_from_slice(&44u64.to_le_bytes());
        z.extend_from_slice(&(0x0300 | VERSION).to_le_bytes());
        z.extend_from_slice(&VERSION.to_le_bytes());
        z.extend_from_slice(&0u32.to_le_bytes());
        z.extend_from_slice(&0u32.to_le_bytes());
        z.extend_from_slice(&n.to_le_bytes());
        z.extend_from_slice(&n.to_le_bytes());
        z.extend_from_slice(&cd_size.to_le_bytes());
        z.extend_from_slice(&cd_start.to_le_bytes());
        // ZIP64 end of central directory locator.
        z.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
        z.extend_from_slice(&0u32.to_le_bytes());
        z.extend_from_slice(&eocd64.to_le_bytes());
        z.extend_from_slice(&1u32.to_le_bytes());
        // End of central directory, every field pointing at the ZIP64 records.
        z.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        z.extend_from_slice(&0u16.to_le_bytes());
        z.extend_from_slice(&0u16.to_le_bytes());
        z.extend_from_slice(&u16::MAX.to_le_bytes());
        z.extend_from_slice(&u16::MAX.to_le_bytes());
        z.extend_from_slice(&u32::MAX.to_le_bytes());
        z.extend_from_slice(&u32::MAX.to_le_bytes());
        z.extend_from_slice(&0u16.to_le_bytes());
        self.put(out, &z);
    }
}

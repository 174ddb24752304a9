use proptest::prelude::*;

use super::replay::parse_segment;
use super::*;

/// The id of the segments the tests build.
const ID: u64 = 7;

fn segment_with(records: &[(u8, i64, Vec<u8>)]) -> Vec<u8> {
    segment_of(ID, records)
}

fn segment_of(id: u64, records: &[(u8, i64, Vec<u8>)]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(SEGMENT_MAGIC);
    bytes.extend_from_slice(&id.to_le_bytes());
    for (kind, ts, body) in records {
        let mut framed = encode_record(*kind, *ts, body).expect("small record");
        framed.stamp(id);
        bytes.extend_from_slice(framed.bytes());
    }
    bytes
}

/// `new`'s bytes written over `old`'s from the start, as a reused segment
/// holds them.
fn overwritten(old: &[u8], new: &[u8]) -> Vec<u8> {
    let mut bytes = old.to_vec();
    if bytes.len() < new.len() {
        bytes.resize(new.len(), 0);
    }
    bytes[..new.len()].copy_from_slice(new);
    bytes
}

fn parse(bytes: &[u8]) -> SegmentReplay {
    parse_segment(bytes, ID)
}

fn contents(replay: SegmentReplay) -> Vec<(u8, i64, Vec<u8>)> {
    replay
        .records
        .into_iter()
        .map(|r| (r.kind, r.received_at_micros, r.body))
        .collect()
}

fn sample() -> Vec<(u8, i64, Vec<u8>)> {
    vec![
        (1, 10, b"first".to_vec()),
        (2, 20, vec![0u8; 300]),
        (3, 30, b"third record body".to_vec()),
    ]
}

#[test]
fn every_record_kind_round_trips_through_its_byte() {
    let mut seen = 0;
    for b in 0..=u8::MAX {
        if let Some(kind) = RecordKind::from_u8(b) {
            assert_eq!(kind as u8, b);
            seen += 1;
        }
    }
    assert_eq!(seen, 10, "a new RecordKind must be readable on replay");
}

#[test]
fn clean_segment_replays_every_record() {
    let replay = parse(&segment_with(&sample()));
    assert_eq!(replay.outcome, ReplayOutcome::Clean);
    let got: Vec<_> = replay
        .records
        .iter()
        .map(|r| (r.kind, r.received_at_micros, r.body.clone()))
        .collect();
    assert_eq!(got, sample());
}

#[test]
fn truncation_at_every_byte_of_last_record_is_a_torn_tail() {
    let full = segment_with(&sample());
    let two = segment_with(&sample()[..2]).len();
    for cut in two..full.len() {
        let replay = parse(&full[..cut]);
        assert_eq!(replay.records.len(), 2, "cut at {cut}");
        let expected = if cut == two {
            ReplayOutcome::Clean
        } else {
            ReplayOutcome::TornTail { offset: two as u64 }
        };
        assert_eq!(replay.outcome, expected, "cut at {cut}");
    }
}

#[test]
fn bad_checksum_on_last_record_is_torn_and_in_the_middle_is_corrupt() {
    let mut bytes = segment_with(&sample());
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    let replay = parse(&bytes);
    assert_eq!(replay.records.len(), 2);
    assert!(matches!(replay.outcome, ReplayOutcome::TornTail { .. }));

    let mut bytes = segment_with(&sample());
    let first_body = SEGMENT_HEADER_LEN + RECORD_HEADER_LEN + 9;
    bytes[first_body] ^= 0xff;
    let replay = parse(&bytes);
    assert!(replay.records.is_empty());
    assert!(
        matches!(replay.outcome, ReplayOutcome::Corrupt { offset, .. } if offset == SEGMENT_HEADER_LEN as u64),
        "{:?}",
        replay.outcome
    );
}

#[test]
fn zero_byte_and_header_only_segments_are_empty() {
    let replay = parse(&[]);
    assert!(replay.records.is_empty());
    assert_eq!(replay.outcome, ReplayOutcome::Clean);
    let replay = parse(&segment_with(&[]));
    assert!(replay.records.is_empty());
    assert_eq!(replay.outcome, ReplayOutcome::Clean);
    let replay = parse(&SEGMENT_MAGIC[..5]);
    assert!(matches!(
        replay.outcome,
        ReplayOutcome::TornTail { offset: 0 }
    ));
}

#[test]
fn zero_filled_tail_is_torn() {
    let mut bytes = segment_with(&sample());
    bytes.extend_from_slice(&[0u8; 4096]);
    let replay = parse(&bytes);
    assert_eq!(replay.records.len(), 3);
    assert!(matches!(replay.outcome, ReplayOutcome::TornTail { .. }));
}

#[test]
fn bad_magic_is_corrupt() {
    let mut bytes = segment_with(&sample());
    bytes[0] = b'X';
    let replay = parse(&bytes);
    assert!(replay.records.is_empty());
    assert!(matches!(
        replay.outcome,
        ReplayOutcome::Corrupt { offset: 0, .. }
    ));
}

#[test]
fn writer_and_reader_agree_on_disk_and_checkpoint_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = WalDir::open(dir.path()).expect("open");
    assert_eq!(wal.checkpoint().expect("checkpoint"), 0);
    let mut w = SegmentWriter::create(wal.segment_path(3), 3).expect("create");
    let framed = encode_record(1, 5, b"hello").expect("encode");
    w.write(&mut [framed]).expect("write");
    w.sync().expect("sync");
    assert_eq!(wal.segments().expect("list"), vec![3]);
    let replay = read_segment(&wal.segment_path(3), 3).expect("read");
    assert_eq!(replay.records.len(), 1);
    assert_eq!(replay.records[0].body, b"hello");
    // Replay is idempotent: reading again gives the same records.
    let again = read_segment(&wal.segment_path(3), 3).expect("read again");
    assert_eq!(again.records, replay.records);
    wal.write_checkpoint(3).expect("checkpoint");
    assert_eq!(wal.checkpoint().expect("checkpoint"), 3);
    let q = wal.quarantine(3).expect("quarantine");
    assert!(q.exists());
    wal.retire_segment(3).expect("retire");
    assert!(wal.segments().expect("list").is_empty());
}

#[test]
fn a_header_naming_another_segment_gives_no_records() {
    // A spare renamed to a segment's name without its header rewritten.
    let replay = parse(&segment_of(3, &sample()));
    assert!(replay.records.is_empty());
    assert!(
        matches!(&replay.outcome, ReplayOutcome::Corrupt { offset: 0, reason } if reason.contains("names segment 3")),
        "{:?}",
        replay.outcome
    );
}

/// A reused segment: this segment's records written from the start over
/// those of an earlier use (segment 2), whose bytes are still behind them.
#[test]
fn a_reused_segment_gives_only_its_own_records() {
    let old_records: Vec<_> = (0..40u8).map(|i| (1, i64::from(i), vec![i; 97])).collect();
    let old = segment_of(2, &old_records);
    let new = segment_with(&sample());
    let mut torn_write = new.clone();
    let mut torn_record = encode_record(4, 40, &[9; 500]).expect("encode");
    torn_record.stamp(ID);
    torn_write.extend_from_slice(&torn_record.bytes()[..300]);
    let mut flipped = new.clone();
    flipped[SEGMENT_HEADER_LEN + RECORD_HEADER_LEN + 9] ^= 0xff;
    let after_first = segment_with(&sample()[..1]).len() as u64;
    let header = SEGMENT_HEADER_LEN as u64;
    let cases: [(&str, Vec<u8>, usize, ReplayOutcome); 4] = [
        (
            "old bytes after the new records",
            new.clone(),
            3,
            ReplayOutcome::Clean,
        ),
        (
            "the old segment's records alone",
            segment_with(&[]),
            0,
            ReplayOutcome::Clean,
        ),
        (
            "a record cut short by a crash",
            torn_write.clone(),
            3,
            ReplayOutcome::TornTail {
                offset: new.len() as u64,
            },
        ),
        (
            "a bad first record with valid ones after it",
            flipped,
            0,
            ReplayOutcome::Corrupt {
                offset: header,
                reason: format!(
                    "record checksum mismatch; a valid record follows at {after_first}"
                ),
            },
        ),
    ];
    for (case, written, records, outcome) in cases {
        let replay = parse(&overwritten(&old, &written));
        assert_eq!(replay.outcome, outcome, "{case}");
        assert_eq!(contents(replay), sample()[..records].to_vec(), "{case}");
    }
    // Each record of the old use is valid as segment 2's.
    assert_eq!(contents(parse_segment(&old, 2)), old_records);
}

/// Bodies are the clients' bytes: a region after a bad record that holds
/// this segment's id over and over costs a bounded search, and is taken
/// for corruption when the search cannot finish.
#[test]
fn the_search_after_a_bad_record_is_bounded() {
    let mut bytes = segment_with(&sample());
    let bad_at = bytes.len() as u64;
    bytes.extend_from_slice(&[0xff; 16]);
    let region = 2 << 20;
    let mut fake = Vec::with_capacity(32);
    fake.extend_from_slice(&(1u32 << 20).to_le_bytes());
    fake.extend_from_slice(&[0; 4]);
    fake.extend_from_slice(&ID.to_le_bytes());
    fake.resize(32, 0xab);
    while bytes.len() < region {
        bytes.extend_from_slice(&fake);
    }
    let replay = parse(&bytes);
    assert!(
        matches!(&replay.outcome, ReplayOutcome::Corrupt { offset, reason }
            if *offset == bad_at && reason.contains("not checked")),
        "{:?}",
        replay.outcome
    );
    assert_eq!(contents(replay), sample());
}

/// Segments written before records carried their segment id (`FSWAL001`)
/// are read as they were written: 8-byte record headers, the checksum
/// over the payload alone.
#[test]
fn segments_of_the_first_format_still_replay() {
    let mut v1 = Vec::new();
    v1.extend_from_slice(SEGMENT_MAGIC_V1);
    v1.extend_from_slice(&ID.to_le_bytes());
    for (kind, ts, body) in sample() {
        let mut payload = vec![kind];
        payload.extend_from_slice(&ts.to_le_bytes());
        payload.extend_from_slice(&body);
        v1.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        v1.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        v1.extend_from_slice(&payload);
    }
    let replay = parse(&v1);
    assert_eq!(replay.outcome, ReplayOutcome::Clean);
    assert_eq!(replay.valid_len, v1.len() as u64);
    assert_eq!(contents(replay), sample());

    let torn = parse(&v1[..v1.len() - 3]);
    assert!(matches!(torn.outcome, ReplayOutcome::TornTail { .. }));
    assert_eq!(torn.records.len(), 2);

    let mut flipped = v1.clone();
    flipped[SEGMENT_HEADER_LEN + RECORD_HEADER_LEN_V1 + 9] ^= 0xff;
    let corrupt = parse(&flipped);
    assert!(matches!(corrupt.outcome, ReplayOutcome::Corrupt { .. }));
    assert!(corrupt.records.is_empty());
}

/// Retired segments are kept as spares, two at most and none larger than
/// `MAX_SPARE_BYTES`; a spare becomes a segment whose old records do not
/// replay; the next id is above every id the WAL holds.
#[test]
fn retired_segments_become_spares_and_spares_become_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = WalDir::open(dir.path()).expect("open");
    for id in 1..=4 {
        let mut w = SegmentWriter::create(wal.segment_path(id), id).expect("create");
        let framed = encode_record(1, 5, &vec![id as u8; 1000]).expect("encode");
        w.write(&mut [framed]).expect("write");
        w.sync().expect("sync");
    }
    for id in 1..=3 {
        wal.retire_segment(id).expect("retire");
    }
    let mut kept: Vec<u64> = wal.spares().expect("spares").iter().map(|s| s.0).collect();
    kept.sort_unstable();
    assert_eq!(kept, vec![1, 2], "the third is deleted");
    assert_eq!(wal.segments().expect("segments"), vec![4]);
    assert_eq!(wal.last_id().expect("last id"), 4);

    let spare = wal.take_spare().expect("a spare");
    let mut w = SegmentWriter::create_or_reuse(wal.segment_path(5), 5, Some(spare)).expect("reuse");
    assert_eq!(wal.spares().expect("spares").len(), 1);
    let replay = read_segment(&wal.segment_path(5), 5).expect("read");
    assert!(
        replay.records.is_empty(),
        "the old record is not segment 5's"
    );
    assert_eq!(replay.outcome, ReplayOutcome::Clean);
    let framed = encode_record(2, 6, b"new").expect("encode");
    w.write(&mut [framed]).expect("write");
    w.sync().expect("sync");
    let replay = read_segment(&wal.segment_path(5), 5).expect("read");
    assert_eq!(contents(replay), vec![(2, 6, b"new".to_vec())]);

    // Too large to keep, though there is room for a spare.
    let big = std::fs::OpenOptions::new()
        .write(true)
        .open(wal.segment_path(4))
        .expect("open");
    big.set_len(MAX_SPARE_BYTES + 1).expect("grow (sparse)");
    wal.retire_segment(4).expect("retire");
    assert!(!wal.segment_path(4).exists());
    assert_eq!(wal.spares().expect("spares").len(), 1);

    // A spare's id counts for the next id.
    let (id, _) = wal.spares().expect("spares")[0];
    std::fs::rename(wal.spare_path(id), wal.spare_path(40)).expect("rename");
    assert_eq!(wal.last_id().expect("last id"), 40);
}

/// A spare renamed to a segment's name whose directory sync then fails
/// does not keep that name: the next attempt at the same segment (the next
/// group, or the next rotation) creates it, instead of finding the name
/// taken for good.
#[test]
fn a_spare_that_fails_to_become_a_segment_leaves_its_name_free() {
    use crate::wal::segment::FAIL_DIR_SYNC;
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = WalDir::open(dir.path()).expect("open");
    let mut w = SegmentWriter::create(wal.segment_path(1), 1).expect("create");
    w.write(&mut [encode_record(1, 5, &[1; 1000]).expect("encode")])
        .expect("write");
    w.sync().expect("sync");
    drop(w);
    wal.retire_segment(1).expect("retire");
    let spare = wal.take_spare().expect("a spare");

    FAIL_DIR_SYNC.set(true);
    let failed = SegmentWriter::create_or_reuse(wal.segment_path(2), 2, Some(spare));
    FAIL_DIR_SYNC.set(false);
    let err = failed.expect_err("the directory sync fails");
    assert!(
        err.to_string().contains("injected directory sync failure"),
        "{err}"
    );
    assert!(!wal.segment_path(2).exists(), "segment 2's name is free");
    assert!(
        wal.spares().expect("spares").is_empty(),
        "the spare is gone"
    );

    let mut w = SegmentWriter::create_or_reuse(wal.segment_path(2), 2, wal.take_spare())
        .expect("the next attempt creates segment 2");
    w.write(&mut [encode_record(2, 6, b"new").expect("encode")])
        .expect("write");
    w.sync().expect("sync");
    let replay = read_segment(&wal.segment_path(2), 2).expect("read");
    assert_eq!(contents(replay), vec![(2, 6, b"new".to_vec())]);
}

proptest! {
    #[test]
    fn any_records_round_trip(records in proptest::collection::vec(
        (1u8..=6, any::<i64>(), proptest::collection::vec(any::<u8>(), 0..512)), 0..20)) {
        let replay = parse(&segment_with(&records));
        prop_assert_eq!(replay.outcome, ReplayOutcome::Clean);
        let got: Vec<_> = replay.records.into_iter().map(|r| (r.kind, r.received_at_micros, r.body)).collect();
        prop_assert_eq!(got, records);
    }

    #[test]
    fn any_truncation_keeps_a_valid_prefix(
        records in proptest::collection::vec((1u8..=6, any::<i64>(), proptest::collection::vec(any::<u8>(), 0..128)), 1..10),
        cut_frac in 0.0f64..1.0,
    ) {
        let full = segment_with(&records);
        let cut = SEGMENT_HEADER_LEN + ((full.len() - SEGMENT_HEADER_LEN) as f64 * cut_frac) as usize;
        let replay = parse(&full[..cut]);
        let corrupt = matches!(replay.outcome, ReplayOutcome::Corrupt { .. });
        prop_assert!(!corrupt);
        let got: Vec<_> = replay.records.into_iter().map(|r| (r.kind, r.received_at_micros, r.body)).collect();
        prop_assert_eq!(&got[..], &records[..got.len()]);
    }

    #[test]
    fn any_byte_flip_never_yields_a_wrong_record(
        records in proptest::collection::vec((1u8..=6, any::<i64>(), proptest::collection::vec(any::<u8>(), 1..64)), 1..6),
        pos_frac in 0.0f64..1.0,
    ) {
        let mut bytes = segment_with(&records);
        let pos = SEGMENT_HEADER_LEN + ((bytes.len() - SEGMENT_HEADER_LEN) as f64 * pos_frac) as usize;
        let pos = pos.min(bytes.len() - 1);
        bytes[pos] ^= 0x5a;
        let replay = parse(&bytes);
        let got: Vec<_> = replay.records.into_iter().map(|r| (r.kind, r.received_at_micros, r.body)).collect();
        prop_assert!(got.len() < records.len());
        prop_assert_eq!(&got[..], &records[..got.len()]);
    }

    #[test]
    fn a_reused_segment_never_yields_an_old_record(
        old in proptest::collection::vec((1u8..=6, any::<i64>(), proptest::collection::vec(any::<u8>(), 0..256)), 0..30),
        new in proptest::collection::vec((1u8..=6, any::<i64>(), proptest::collection::vec(any::<u8>(), 0..256)), 0..30),
    ) {
        let bytes = overwritten(&segment_of(2, &old), &segment_with(&new));
        let replay = parse(&bytes);
        let corrupt = matches!(replay.outcome, ReplayOutcome::Corrupt { .. });
        prop_assert!(!corrupt, "{:?}", replay.outcome);
        prop_assert_eq!(contents(replay), new);
    }
}

use super::*;

fn rec(i: u32) -> Vec<u8> {
    format!("batch-{i:05}-{}", "x".repeat(100)).into_bytes()
}

fn drain(q: &mut FileQueue) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(p) = q.pop().unwrap() {
        q.ack(p.ticket).unwrap();
        out.push(p.payload);
    }
    out
}

#[test]
fn fifo_across_segments_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let max = 512 << 10;
    let (mut q, rep) = FileQueue::open(dir.path(), max).unwrap();
    assert_eq!(rep, OpenReport::default());
    // 64 KiB segments: 2000 records span several.
    for i in 0..2000 {
        assert_eq!(q.push(&rec(i), 3).unwrap(), Evicted::default());
    }
    assert_eq!(q.unread_records(), 2000);
    assert_eq!(q.unread_items(), 6000);
    assert!(q.segments.len() > 2);
    for i in 0..500 {
        let p = q.pop().unwrap().unwrap();
        assert_eq!(p.payload, rec(i));
        assert_eq!(p.items, 3);
        q.ack(p.ticket).unwrap();
    }
    drop(q);
    let (mut q, rep) = FileQueue::open(dir.path(), max).unwrap();
    assert_eq!(rep.records, 1500);
    assert_eq!(rep.items, 4500);
    let got = drain(&mut q);
    assert_eq!(got, (500..2000).map(rec).collect::<Vec<_>>());
    drop(q);
    // Everything acknowledged: only the fresh write segment remains.
    let (mut q, rep) = FileQueue::open(dir.path(), max).unwrap();
    assert_eq!(rep.records, 0);
    assert_eq!(q.segments.len(), 1, "{:?}", q.segments);
    q.push(&rec(7), 1).unwrap();
    drop(q);
    let (mut q, rep) = FileQueue::open(dir.path(), max).unwrap();
    assert_eq!(rep.records, 1);
    assert_eq!(drain(&mut q), vec![rec(7)]);
}

#[test]
fn unacknowledged_records_are_replayed_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (mut q, _) = FileQueue::open(dir.path(), 1 << 20).unwrap();
    for i in 0..10 {
        q.push(&rec(i), 1).unwrap();
    }
    let a = q.pop().unwrap().unwrap();
    let b = q.pop().unwrap().unwrap();
    let c = q.pop().unwrap().unwrap();
    // b and c done, a still in flight: the cursor cannot pass a.
    q.ack(b.ticket).unwrap();
    q.ack(c.ticket).unwrap();
    std::mem::forget(q); // no drop: like kill -9
    let (mut q, rep) = FileQueue::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(rep.records, 10);
    let p = q.pop().unwrap().unwrap();
    assert_eq!(p.payload, a.payload);
    q.ack(p.ticket).unwrap();
    assert_eq!(drain(&mut q).len(), 9);
}

#[test]
fn torn_and_corrupt_tails_are_cut_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (mut q, _) = FileQueue::open(dir.path(), 1 << 20).unwrap();
    for i in 0..5 {
        q.push(&rec(i), 7).unwrap();
    }
    let seg = dir.path().join(seg_name(q.segments.back().unwrap().seq));
    drop(q);
    // A torn write: half a record at the end.
    let mut bytes = fs::read(&seg).unwrap();
    let one = HEADER as usize + rec(0).len();
    let mut torn = bytes.clone();
    torn.extend_from_slice(&bytes[8..8 + one / 2]);
    fs::write(&seg, &torn).unwrap();
    let (mut q, rep) = FileQueue::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(rep.records, 5);
    assert_eq!(rep.truncated_bytes, (one / 2) as u64);
    assert_eq!(rep.truncated_items, 7);
    assert_eq!(fs::metadata(&seg).unwrap().len(), bytes.len() as u64);
    drop(q);
    // A flipped bit in the fourth record: it and everything after it go.
    let at = 8 + 3 * one + HEADER as usize + 5;
    bytes[at] ^= 0x40;
    fs::write(&seg, &bytes).unwrap();
    let (mut q2, rep) = FileQueue::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(rep.records, 3);
    assert_eq!(rep.truncated_bytes, 2 * one as u64);
    assert_eq!(drain(&mut q2), (0..3).map(rec).collect::<Vec<_>>());
    // A file that is not a segment at all is deleted.
    drop(q2);
    fs::write(dir.path().join(seg_name(999)), b"garbage!garbage").unwrap();
    let (_, rep) = FileQueue::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(rep.truncated_bytes, 15);
    assert!(!dir.path().join(seg_name(999)).exists());
    q = FileQueue::open(dir.path(), 1 << 20).unwrap().0;
    assert_eq!(q.unread_records(), 0);
}

#[test]
fn a_full_queue_evicts_its_oldest_segment_and_says_how_much() {
    let dir = tempfile::tempdir().unwrap();
    // 512 KiB: 64 KiB segments.
    let max = 512 << 10;
    let (mut q, _) = FileQueue::open(dir.path(), max).unwrap();
    let mut evicted = Evicted::default();
    let n = 20_000;
    for i in 0..n {
        let e = q.push(&rec(i), 2).unwrap();
        evicted.records += e.records;
        evicted.items += e.items;
        assert!(q.size_bytes() <= max);
    }
    assert!(evicted.records > 0);
    assert_eq!(evicted.items, 2 * evicted.records);
    let left = drain(&mut q);
    assert_eq!(left.len() as u64 + evicted.records, n as u64);
    // What is left is the newest data, in order.
    let first = n - left.len() as u32;
    assert_eq!(left, (first..n).map(rec).collect::<Vec<_>>());
    assert!(matches!(
        q.push(&vec![0; max as usize], 1),
        Err(QueueError::TooLarge { .. })
    ));
}

#[test]
fn a_write_failing_part_way_loses_nothing_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut q, _) = FileQueue::open(dir.path(), 1 << 20).unwrap();
    let mut accepted = Vec::new();
    for i in 0..30 {
        if i % 7 == 3 {
            // The disk fills up after half the record (or after its header only).
            q.fail_next_write = Some(if i % 2 == 0 { 40 } else { 5 });
            assert!(matches!(q.push(&rec(i), 1), Err(QueueError::Io { .. })));
            continue;
        }
        q.push(&rec(i), 1).unwrap();
        accepted.push(rec(i));
    }
    assert_eq!(q.unread_records(), accepted.len() as u64);
    // Read half in this run, the rest after a restart: every accepted record, in order.
    let mut got = Vec::new();
    for _ in 0..10 {
        let p = q.pop().unwrap().unwrap();
        q.ack(p.ticket).unwrap();
        got.push(p.payload);
    }
    drop(q);
    let (mut q, rep) = FileQueue::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(rep.truncated_bytes, 0, "{rep:?}");
    assert_eq!(rep.records, accepted.len() as u64 - 10);
    got.extend(drain(&mut q));
    assert_eq!(got, accepted);
}

/// A real full file system: a 320 KiB tmpfs mounted by the test (needs root, as in CI;
/// fails loudly otherwise), smaller than the queue's own limit.
#[test]
fn a_full_file_system_loses_nothing_accepted() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path();
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=320k", "celeriac-test"])
        .arg(mnt)
        .output()
        .expect("running mount(8)");
    assert!(
        out.status.success(),
        "this test mounts a small tmpfs and needs root (CAP_SYS_ADMIN): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(mnt);
    let qdir = mnt.join("q");
    // A 512 KiB queue (64 KiB segments) on 320 KiB of disk: the disk fills up first.
    let (mut q, _) = FileQueue::open(&qdir, 512 << 10).unwrap();
    let big = |i: u32| {
        let mut r = rec(i);
        r.resize(3000 + (i as usize % 5) * 1000, b'a' + (i % 26) as u8);
        r
    };
    let (mut accepted, mut failed) = (Vec::new(), 0u64);
    let mut acked = Vec::new();
    for i in 0..600u32 {
        match q.push(&big(i), 2) {
            Ok(e) => {
                assert_eq!(e, Evicted::default());
                accepted.push(big(i));
            }
            Err(QueueError::Io { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(28), "{source}");
                failed += 1;
            }
            Err(e) => panic!("{e}"),
        }
        // Now and then the backend takes a few: whole segments are freed.
        if i % 100 == 99 {
            for _ in 0..40 {
                let Some(p) = q.pop().unwrap() else { break };
                q.ack(p.ticket).unwrap();
                acked.push(p.payload);
            }
        }
    }
    assert!(failed > 0, "the file system never filled up");
    assert!(
        accepted.len() > 150,
        "{} accepted, {failed} failed",
        accepted.len()
    );
    drop(q);
    let (mut q, rep) = FileQueue::open(&qdir, 512 << 10).unwrap();
    assert_eq!(rep.truncated_bytes, 0, "{rep:?}");
    acked.extend(drain(&mut q));
    println!(
        "FIGURES full_disk: {} pushes, {} accepted, {failed} refused with ENOSPC, {} delivered after reopen, torn bytes left {}",
        accepted.len() as u64 + failed,
        accepted.len(),
        acked.len(),
        rep.truncated_bytes
    );
    assert_eq!(acked.len(), accepted.len(), "{failed} failed");
    assert!(acked == accepted, "records lost or out of order");
}

#[test]
fn a_torn_cursor_slot_falls_back_to_the_other_and_garbage_replays_all() {
    let dir = tempfile::tempdir().unwrap();
    let (mut q, _) = FileQueue::open(dir.path(), 1 << 20).unwrap();
    for i in 0..4 {
        q.push(&rec(i), 1).unwrap();
    }
    for _ in 0..2 {
        let p = q.pop().unwrap().unwrap();
        q.ack(p.ticket).unwrap();
    }
    drop(q);
    let (_, rep) = FileQueue::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(rep.records, 2);
    // Tear the newest slot: the previous position (one acknowledged) counts.
    let mut c = fs::read(dir.path().join(CURSOR)).unwrap();
    assert_eq!(c.len(), 2 * SLOT);
    let newest = if c[0] > c[SLOT] { 0 } else { SLOT };
    c[newest + 9] ^= 0xff;
    fs::write(dir.path().join(CURSOR), &c).unwrap();
    let (mut q, rep) = FileQueue::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(rep.records, 3);
    assert_eq!(q.pop().unwrap().unwrap().payload, rec(1));
    drop(q);
    fs::write(dir.path().join(CURSOR), b"nonsense").unwrap();
    let (_, rep) = FileQueue::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(rep.records, 4);
}

#[tokio::test]
async fn disk_queue_pop_waits_for_a_push_and_ends_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let q = DiskQueue::new(FileQueue::open(dir.path(), 1 << 20).unwrap().0);
    let reader = {
        let q = q.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(p) = q.pop().await.unwrap() {
                q.ack(p.ticket).await.unwrap();
                got.push(p.payload);
            }
            got
        })
    };
    for i in 0..50 {
        q.push(rec(i), 1).await.unwrap();
        if i % 10 == 0 {
            tokio::task::yield_now().await;
        }
    }
    q.close();
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, (0..50).map(rec).collect::<Vec<_>>());
}

#[test]
fn settings() {
    assert_eq!(file_settings(Storage::Memory, None, 256).unwrap(), None);
    assert_eq!(
        file_settings(Storage::File, None, 256).unwrap_err().path,
        "sending_queue.directory"
    );
    assert_eq!(
        file_settings(Storage::Memory, Some(Path::new("/q")), 256)
            .unwrap_err()
            .path,
        "sending_queue.directory"
    );
    assert_eq!(
        file_settings(Storage::File, Some(Path::new("/q")), 2).unwrap(),
        Some((PathBuf::from("/q"), 2 << 20))
    );
    assert_eq!(
        component_dir(Path::new("/q"), "exporter/otlp/tempo"),
        PathBuf::from("/q/otlp_tempo")
    );
}

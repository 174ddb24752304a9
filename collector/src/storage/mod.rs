//! Parquet storage: the Hive layout and the atomic writer.

pub mod layout;
pub mod parquet;
pub mod take;

/// Runs each job on a scoped thread of its own and returns their results
/// in the jobs' order. A panic in a job is raised again here, once every
/// thread has ended.
pub(crate) fn each_on_its_thread<T: Send, F: FnOnce() -> T + Send>(
    jobs: impl IntoIterator<Item = F>,
) -> Vec<T> {
    std::thread::scope(|scope| {
        let running: Vec<_> = jobs.into_iter().map(|job| scope.spawn(job)).collect();
        running
            .into_iter()
            .map(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

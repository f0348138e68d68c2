//! A row-major output matrix that parallel tasks fill by column ranges:
//! the matmul splits weight rows (output columns) over tasks, and each
//! task writes its range of every activation row. Slices cannot express
//! that split (each task's part is strided), so the writes go through a
//! raw pointer, checked against the matrix's bounds on every write.

use std::marker::PhantomData;
use std::mem::MaybeUninit;

pub(crate) struct Columns<'a> {
    ptr: *mut f32,
    rows: usize,
    cols: usize,
    _out: PhantomData<&'a mut [f32]>,
}

// SAFETY: tasks write disjoint column ranges (the matmul gives each group
// of weight rows to exactly one task), so no element is written twice or
// read while written; the borrow of `out` outlives every task.
unsafe impl Send for Columns<'_> {}
unsafe impl Sync for Columns<'_> {}

impl<'a> Columns<'a> {
    /// `out`: `rows × cols`, row-major (`out.len() / cols` rows).
    pub(crate) fn new(out: &'a mut [f32], cols: usize) -> Self {
        Self {
            ptr: out.as_mut_ptr(),
            rows: out.len() / cols.max(1),
            cols,
            _out: PhantomData,
        }
    }

    /// The same over memory not yet written (`MaybeUninit` is
    /// `repr(transparent)`, so the cast keeps layout and alignment).
    pub(crate) fn new_uninit(out: &'a mut [MaybeUninit<f32>], cols: usize) -> Self {
        Self {
            ptr: out.as_mut_ptr().cast::<f32>(),
            rows: out.len() / cols.max(1),
            cols,
            _out: PhantomData,
        }
    }

    /// `out[r][c0 .. c0 + run.len()] = run`; out of bounds is ignored.
    /// Callers keep their column ranges disjoint across tasks.
    pub(crate) fn write(&self, r: usize, c0: usize, run: &[f32]) {
        if r >= self.rows || c0 + run.len() > self.cols {
            return;
        }
        // SAFETY: in bounds (checked above) of the exclusively borrowed
        // output, and no other task writes these columns.
        unsafe {
            std::ptr::copy_nonoverlapping(
                run.as_ptr(),
                self.ptr.add(r * self.cols + c0),
                run.len(),
            );
        }
    }
}

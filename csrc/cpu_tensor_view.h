// What zkernels._cpu_ops knows of a torch tensor it is handed: read from the tensor itself (data
// pointer, dtype, device, shape, strides) through Python attribute access, so no torch header is
// needed and no caller can hand over a pointer with the wrong sizes or strides beside it. Each op then
// checks the shapes, strides and dtypes its kernel relies on and raises a Python ValueError naming the
// argument; it never reads past what the tensor holds.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

namespace zk {
namespace cpu {

namespace py = pybind11;

enum class Elem { F32, BF16, I32, I64, Other };

inline const char* elem_name(Elem e) {
    switch (e) {
        case Elem::F32: return "torch.float32";
        case Elem::BF16: return "torch.bfloat16";
        case Elem::I32: return "torch.int32";
        case Elem::I64: return "torch.int64";
        default: return "another dtype";
    }
}

struct TensorView {
    std::string op, name;  // for messages: "attention: cu_seqlens_q ..."
    uintptr_t ptr = 0;
    Elem elem = Elem::Other;
    std::string dtype;     // torch's name, for messages
    std::vector<int64_t> shape, stride;

    int64_t dim() const { return (int64_t)shape.size(); }
    int64_t size(int64_t d) const { return shape[(size_t)d]; }
    int64_t strides(int64_t d) const { return stride[(size_t)d]; }
    int64_t numel() const {
        int64_t n = 1;
        for (int64_t s : shape) n *= s;
        return n;
    }
    const void* data() const { return reinterpret_cast<const void*>(ptr); }
    void* mutable_data() const { return reinterpret_cast<void*>(ptr); }

    std::string shape_str() const {
        std::string s = "(";
        for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
        return s + (shape.size() == 1 ? ",)" : ")");
    }
    [[noreturn]] void fail(const std::string& what) const { throw py::value_error(op + ": " + name + " " + what); }

    void expect_dim(int64_t n) const {
        if (dim() != n) fail("must have " + std::to_string(n) + " dims, got shape " + shape_str());
    }
    // -1 in `dims` takes any size there
    void expect_shape(const std::vector<int64_t>& dims) const {
        expect_dim((int64_t)dims.size());
        for (size_t i = 0; i < dims.size(); ++i)
            if (dims[i] >= 0 && shape[i] != dims[i]) {
                std::string want = "(";
                for (size_t j = 0; j < dims.size(); ++j)
                    want += (j ? ", " : "") + (dims[j] >= 0 ? std::to_string(dims[j]) : std::string("*"));
                fail("must have shape " + want + (dims.size() == 1 ? ",)" : ")") + ", got " + shape_str());
            }
    }
    void expect_elem(Elem e) const {
        if (elem != e) fail(std::string("must be ") + elem_name(e) + ", got " + dtype);
    }
    void expect_float() const {
        if (elem != Elem::F32 && elem != Elem::BF16) fail("must be torch.float32 or torch.bfloat16, got " + dtype);
    }
    void expect_same_elem(const TensorView& other) const {
        if (elem != other.elem) fail("has dtype " + dtype + ", but " + other.name + " is " + other.dtype);
    }
    // The kernels read each row (the last dim) as one contiguous run.
    void expect_unit_last_stride() const {
        if (!shape.empty() && shape.back() > 1 && stride.back() != 1)
            fail("must have a last-dim stride of 1, got strides " + strides_str());
    }
    // Outputs: written row by row from several threads, so rows must not overlap.
    void expect_contiguous() const {
        int64_t expected = 1;
        for (int64_t d = dim() - 1; d >= 0; --d) {
            if (shape[(size_t)d] > 1 && stride[(size_t)d] != expected)
                fail("must be contiguous, got shape " + shape_str() + " strides " + strides_str());
            expected *= shape[(size_t)d];
        }
    }
    std::string strides_str() const {
        std::string s = "(";
        for (size_t i = 0; i < stride.size(); ++i) s += (i ? ", " : "") + std::to_string(stride[i]);
        return s + (stride.size() == 1 ? ",)" : ")");
    }
};

// The view of `t`, a strided CPU torch.Tensor; anything else is a ValueError naming `name`.
inline TensorView view_of(const std::string& op, const std::string& name, py::handle t) {
    TensorView v;
    v.op = op;
    v.name = name;
    if (t.is_none() || !py::hasattr(t, "data_ptr") || !py::hasattr(t, "stride") || !py::hasattr(t, "dtype"))
        v.fail(std::string("must be a torch.Tensor, got ") + std::string(py::str(py::type::handle_of(t).attr("__name__"))));
    const std::string device = py::str(t.attr("device").attr("type"));
    if (device != "cpu") v.fail("is on " + std::string(py::str(t.attr("device"))) + "; the cpu ops take CPU tensors");
    if (std::string(py::str(t.attr("layout"))) != "torch.strided") v.fail("must be a dense (strided) tensor");
    v.dtype = py::str(t.attr("dtype"));
    v.elem = v.dtype == "torch.float32" ? Elem::F32 : v.dtype == "torch.bfloat16" ? Elem::BF16
           : v.dtype == "torch.int32" ? Elem::I32 : v.dtype == "torch.int64" ? Elem::I64 : Elem::Other;
    for (py::handle s : py::tuple(t.attr("shape"))) v.shape.push_back(s.cast<int64_t>());
    for (py::handle s : py::tuple(t.attr("stride")())) v.stride.push_back(s.cast<int64_t>());
    for (int64_t s : v.stride)
        if (s < 0) v.fail("has a negative stride");
    v.ptr = t.attr("data_ptr")().cast<uintptr_t>();
    if (v.ptr == 0 && v.numel() > 0) v.fail("has no data");
    return v;
}

}  // namespace cpu
}  // namespace zk
